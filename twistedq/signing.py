"""
Signed task messages: an HMAC-SHA256 of the whole message body, under a
key shared by the publishers and the daemons.

The body holds the whole envelope (id, task name, arguments, taskset, ETA,
expiry, retries), so the signature covers all of it; it travels in two
message headers, :py:data:`SIGNATURE_HEADER` (the HMAC in hexadecimal) and
:py:data:`KEY_ID_HEADER` (which key made it).

Keys are configured as ``id:secret,id:secret,...``: the first key signs,
every key verifies, so keys are rotated by putting a new key first and
dropping the old one once no message signed with it is left.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BAD_SIGNATURE",
    "KEY_ID_HEADER",
    "SIGNATURE_HEADER",
    "UNSIGNED",
    "SignatureError",
    "SigningKeyError",
    "SigningKeys",
]

#: The header holding the HMAC-SHA256 of the body, in hexadecimal.
SIGNATURE_HEADER = "x-twistedq-signature"
#: The header naming the key that signed the body.
KEY_ID_HEADER = "x-twistedq-key-id"

#: Reason of a message without a signature, refused when keys are configured.
UNSIGNED = "unsigned"
#: Reason of a message whose signature does not verify.
BAD_SIGNATURE = "bad-signature"


class SigningKeyError(ValueError):
    """
    A list of signing keys could not be understood.
    """


class SignatureError(Exception):
    """
    A message is unsigned, or its signature does not verify.

    :ivar reason: :py:data:`UNSIGNED` or :py:data:`BAD_SIGNATURE`.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None


class SigningKeys:
    """
    The keys that sign and verify messages: the first signs, every one
    verifies.
    """

    __slots__ = ("_secrets", "signing_key_id")

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        """
        :param keys: ``(key id, secret)`` pairs, the signing key first.
        :raises SigningKeyError: no key, an empty id or secret, or an id
            given twice.
        """
        if not keys:
            raise SigningKeyError("no signing key given")
        self._secrets: dict[str, bytes] = {}
        for key_id, secret in keys:
            if not key_id or not secret:
                raise SigningKeyError("a signing key needs a non-empty id and secret")
            if key_id in self._secrets:
                raise SigningKeyError(f"signing key id {key_id!r} is given twice")
            self._secrets[key_id] = secret
        #: The id of the key that signs.
        self.signing_key_id = keys[0][0]

    @classmethod
    def parse(cls, text: str) -> SigningKeys:
        """
        Read ``id:secret,id:secret,...`` (ids without ``:`` or ``,``,
        secrets without ``,``; spaces around each key are ignored).

        :raises SigningKeyError: the text is not such a list.
        """
        keys = []
        for place, item in enumerate(text.split(","), 1):
            item = item.strip()
            if not item:
                continue
            key_id, colon, secret = item.partition(":")
            # The errors name the key's place, never its text: without a
            # colon, all of it may be the secret.
            if not colon:
                raise SigningKeyError(f"signing key number {place} is not written id:secret")
            if not key_id.strip() or not secret:
                raise SigningKeyError(f"signing key number {place} needs a non-empty id and secret")
            keys.append((key_id.strip(), secret.encode("utf-8")))
        return cls(keys)

    @property
    def key_ids(self) -> list[str]:
        """
        The ids of the keys, the signing key first.
        """
        return list(self._secrets)

    def __repr__(self) -> str:
        return f"<SigningKeys {', '.join(self._secrets)}>"

    def sign(self, body: bytes) -> dict[str, str]:
        """
        The headers that sign ``body`` with the first key.
        """
        key_id = self.signing_key_id
        digest = hmac.new(self._secrets[key_id], body, hashlib.sha256).hexdigest()
        return {SIGNATURE_HEADER: digest, KEY_ID_HEADER: key_id}

    def verify(self, body: bytes, headers: Mapping[str, Any] | None) -> None:
        """
        Check the signature that ``headers`` carry for ``body``.

        :raises SignatureError: there is none (:py:data:`UNSIGNED`), or it
            names an unknown key or does not match (:py:data:`BAD_SIGNATURE`).
        """
        if not headers or SIGNATURE_HEADER not in headers:
            raise SignatureError(UNSIGNED, f"the message has no {SIGNATURE_HEADER} header")
        signature = _text(headers[SIGNATURE_HEADER])
        if signature is None:
            raise SignatureError(BAD_SIGNATURE, f"the {SIGNATURE_HEADER} header is not a string")
        key_id = _text(headers.get(KEY_ID_HEADER))
        secret = self._secrets.get(key_id) if key_id is not None else None
        if secret is None:
            raise SignatureError(
                BAD_SIGNATURE, f"the message is signed with an unknown key {key_id!r}"
            )
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8")):
            raise SignatureError(
                BAD_SIGNATURE, f"the signature by key {key_id!r} does not match the body"
            )
