"""
Tests for :py:mod:`twistedq.signing` and the settings that configure it and
the message size limit (:py:class:`twistedq.conf.Settings`).
"""

import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twistedq import tap
from twistedq.conf import DEFAULT_MAX_MESSAGE_SIZE, Settings, SettingsError, parse_size
from twistedq.message import MAX_BODY_SIZE
from twistedq.signing import (
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    SigningKeyError,
    SigningKeys,
)

BODY = b'{"v":1,"id":"00000000-0000-4000-8000-000000000001","task":"add","args":[1,2]}'


class ParseTests(SynchronousTestCase):
    """
    ``id:secret,...`` lists.
    """

    def test_order_and_spaces(self):
        """
        The first key signs; spaces around keys are ignored; a secret may
        hold colons.
        """
        keys = SigningKeys.parse(" new:a:b:c , old:xyz,")
        self.assertEqual(keys.key_ids, ["new", "old"])
        self.assertEqual(keys.signing_key_id, "new")
        self.assertEqual(keys.sign(BODY), SigningKeys.parse("new:a:b:c").sign(BODY))

    def test_refused(self):
        """
        An empty list, a key without a colon, an empty id or secret, or an
        id given twice is refused.
        """
        for text in ["", " , ", "nocolon", ":secret", "id:", "a:1,a:2"]:
            self.assertRaises(SigningKeyError, SigningKeys.parse, text)

    def test_errors_never_show_a_secret(self):
        """
        The error of a key written without ``id:`` (its text all secret)
        or without an id names its place in the list, never any part of
        the text.
        """
        secret = "Zq8xK2vR9mW4pL7tN3jY"
        for text, place in [
            (secret, "1"),
            (f"k1:fine, {secret}", "2"),
            (f":{secret}", "1"),
        ]:
            with self.assertRaises(SigningKeyError) as raised:
                SigningKeys.parse(text)
            message = str(raised.exception)
            for start in range(len(secret) - 2):
                self.assertNotIn(secret[start : start + 3], message, text)
            self.assertIn(place, message)

    def test_repr_hides_secrets(self):
        """
        The keys' repr names the ids, never the secrets.
        """
        self.assertEqual(repr(SigningKeys.parse("k1:hunter2")), "<SigningKeys k1>")


class SignVerifyTests(SynchronousTestCase):
    """
    HMAC-SHA256 of the body, checked against every configured key.
    """

    keys = SigningKeys.parse("new:s2,old:s1")

    def test_headers(self):
        """
        The signature is the hex HMAC-SHA256 of the body under the first key.
        """
        import hashlib
        import hmac

        headers = self.keys.sign(BODY)
        self.assertEqual(headers[KEY_ID_HEADER], "new")
        self.assertEqual(
            headers[SIGNATURE_HEADER], hmac.new(b"s2", BODY, hashlib.sha256).hexdigest()
        )

    def test_rotation(self):
        """
        A body signed with any listed key verifies, as str or bytes headers.
        """
        self.keys.verify(BODY, self.keys.sign(BODY))
        old = SigningKeys.parse("old:s1").sign(BODY)
        self.keys.verify(BODY, old)
        self.keys.verify(BODY, {k: v.encode() for k, v in old.items()})

    def assertRefused(self, reason, body, headers, fragment):
        error = self.assertRaises(SignatureError, self.keys.verify, body, headers)
        self.assertEqual(error.reason, reason)
        self.assertIn(fragment, str(error))

    def test_unsigned(self):
        """
        No headers, or no signature header, is ``unsigned``.
        """
        self.assertRefused("unsigned", BODY, None, SIGNATURE_HEADER)
        self.assertRefused("unsigned", BODY, {KEY_ID_HEADER: "new"}, SIGNATURE_HEADER)

    def test_bad_signature(self):
        """
        An altered body, an unknown or missing key id, a wrong secret or a
        signature that is not a string is ``bad-signature``.
        """
        headers = self.keys.sign(BODY)
        self.assertRefused("bad-signature", BODY + b" ", headers, "does not match")
        self.assertRefused(
            "bad-signature", BODY, SigningKeys.parse("gone:s0").sign(BODY), "unknown key 'gone'"
        )
        self.assertRefused(
            "bad-signature", BODY, {SIGNATURE_HEADER: headers[SIGNATURE_HEADER]}, "unknown key"
        )
        self.assertRefused(
            "bad-signature", BODY, SigningKeys.parse("new:wrong").sign(BODY), "does not match"
        )
        self.assertRefused(
            "bad-signature", BODY, {SIGNATURE_HEADER: 12, KEY_ID_HEADER: "new"}, "not a string"
        )


class SettingsTests(SynchronousTestCase):
    """
    ``TWISTEDQ_SIGNING_KEYS`` and ``TWISTEDQ_MAX_MESSAGE_SIZE``.
    """

    def test_defaults(self):
        """
        No keys, and a limit of 8 MiB: room for 1 MiB of arguments, under
        the format's own ceiling.
        """
        settings = Settings.from_environment({})
        self.assertIsNone(settings.signing())
        self.assertEqual(settings.max_message_size, DEFAULT_MAX_MESSAGE_SIZE)
        self.assertEqual(DEFAULT_MAX_MESSAGE_SIZE, 8 * 1024 * 1024)

    def test_from_environment(self):
        """
        Both are read from the environment, exported again for the children,
        and the secrets stay out of the settings' repr.
        """
        environ = {"TWISTEDQ_SIGNING_KEYS": "a:secret-one", "TWISTEDQ_MAX_MESSAGE_SIZE": "2MiB"}
        settings = Settings.from_environment(environ)
        self.assertEqual(settings.signing().key_ids, ["a"])
        self.assertEqual(settings.max_message_size, 2 * 1024 * 1024)
        self.assertNotIn("secret-one", repr(settings))
        exported = settings.environment()
        self.assertEqual(exported["TWISTEDQ_SIGNING_KEYS"], "a:secret-one")
        self.assertEqual(Settings.from_environment(exported), settings)

    def test_refused(self):
        """
        A size that is not one, over the format's ceiling, or keys that are
        not a list raise :py:class:`SettingsError`.
        """
        for environ in [
            {"TWISTEDQ_MAX_MESSAGE_SIZE": "big"},
            {"TWISTEDQ_MAX_MESSAGE_SIZE": str(MAX_BODY_SIZE + 1)},
            {"TWISTEDQ_SIGNING_KEYS": "no-colon"},
        ]:
            self.assertRaises(SettingsError, Settings.from_environment, environ)

    def test_parse_size(self):
        """
        Sizes are bytes, or KiB and MiB with or without the ``iB``.
        """
        self.assertEqual(
            [parse_size(t) for t in ["100", "4KiB", "4k", "8MiB", "8 M"]],
            [100, 4096, 4096, 8 * 1024 * 1024, 8 * 1024 * 1024],
        )
        for text in ["0", "-1", "1.5M", "8GiB", "MiB", ""]:
            self.assertRaises(ValueError, parse_size, text)


class DaemonOptionsTests(SynchronousTestCase):
    """
    ``twistd twistedq --max-message-size --signing-keys``.
    """

    def setUp(self):
        kept = ("TWISTEDQ_SIGNING_KEYS", "TWISTEDQ_MAX_MESSAGE_SIZE")
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k not in kept})

    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(["--result-backend", "sqlite:///twistedq-test.sqlite3", *argv])
        return options

    def dispatcher(self, options):
        for service in tap.makeService(options):
            if hasattr(service, "dispatcher"):
                return service.dispatcher
        raise AssertionError("no consumer service")

    def test_options_reach_dispatcher_and_children(self):
        """
        The options set the dispatcher's limit and keys, and are in the
        settings the children inherit (so tasks that publish sign too).
        """
        options = self.parse("--max-message-size", "64KiB", "--signing-keys", "k2:b,k1:a")
        dispatcher = self.dispatcher(options)
        self.assertEqual(dispatcher.intake.max_body_size, 64 * 1024)
        self.assertEqual(dispatcher.intake.signing.key_ids, ["k2", "k1"])
        environment = options["settings"].environment()
        self.assertEqual(environment["TWISTEDQ_SIGNING_KEYS"], "k2:b,k1:a")
        self.assertEqual(environment["TWISTEDQ_MAX_MESSAGE_SIZE"], str(64 * 1024))

    def test_defaults(self):
        """
        Without them: 8 MiB, no signing.
        """
        dispatcher = self.dispatcher(self.parse())
        self.assertEqual(dispatcher.intake.max_body_size, DEFAULT_MAX_MESSAGE_SIZE)
        self.assertIsNone(dispatcher.intake.signing)

    def test_bad_values(self):
        """
        A size that is not one, over 16 MiB, or keys that are not a list
        are usage errors.
        """
        for argv in (
            ["--max-message-size", "lots"],
            ["--max-message-size", "17MiB"],
            ["--signing-keys", "nocolon"],
        ):
            self.assertRaises(usage.UsageError, self.parse, *argv)
