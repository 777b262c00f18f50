"""
Settings shared by the daemon and the client: defaults, overridden by the
Django project's settings (when there is one), overridden by the
environment, overridden by explicit arguments.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from twistedq.arguments import DEFAULT_ARGUMENTS_SIZE
from twistedq.backends.base import DEFAULT_RESULT_TTL, MAX_RESULT_EXPIRES
from twistedq.message import MAX_BODY_SIZE
from twistedq.setting_names import (
    DJANGO_SETTINGS,
    ENVIRONMENT_SETTINGS,
    UnknownSettingWarning,
    warn_unknown_settings,
)
from twistedq.signing import SigningKeyError, SigningKeys

__all__ = [
    "DEFAULT_ARGUMENTS_SIZE",
    "DEFAULT_BROKER_URL",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PUBLISH_TIMEOUT",
    "DEFAULT_RESULT_BACKEND",
    "DEFAULT_STATUS_ENDPOINT",
    "DJANGO_SETTINGS",
    "ENVIRONMENT_SETTINGS",
    "MAX_RESULT_EXPIRES",
    "Settings",
    "SettingsError",
    "UnknownSettingWarning",
    "parse_expiry",
    "parse_flag",
    "parse_size",
    "parse_timeout",
    "warn_unknown_settings",
    "with_help",
]

T = TypeVar("T")

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_RESULT_BACKEND = "sqlite://"
DEFAULT_STATUS_ENDPOINT = "tcp:8021:interface=127.0.0.1"
#: The largest task message the daemon takes by default, in bytes.
DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024

_ENVIRONMENT = {
    "broker_url": "TWISTEDQ_BROKER_URL",
    "result_backend": "TWISTEDQ_RESULT_BACKEND",
    "queue": "TWISTEDQ_QUEUE",
    "exchange": "TWISTEDQ_EXCHANGE",
    "signing_keys": "TWISTEDQ_SIGNING_KEYS",
}

#: How long a publish may wait for the broker by default, in seconds.
DEFAULT_PUBLISH_TIMEOUT = 30.0


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

_UNITS = {"": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2}


def parse_timeout(text: str) -> float:
    """
    A positive, finite number of seconds from ``30`` or ``2.5``.

    :raises ValueError: it is not such a number.
    """
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{text!r} is not a positive number of seconds")
    return seconds


def parse_expiry(text: str) -> int:
    """
    A whole number of seconds from ``86400``, from 1 to
    :py:data:`MAX_RESULT_EXPIRES`.

    :raises ValueError: it is not such a number.
    """
    stripped = text.strip()
    digits = stripped.lstrip("0")
    if not (stripped.isascii() and stripped.isdigit()) or not digits:
        raise ValueError(f"{text[:30]!r} is not a whole number of seconds of at least 1")
    if len(digits) > 12 or int(digits) > MAX_RESULT_EXPIRES:
        raise ValueError(
            f"{stripped[:30]} seconds is too long: at most {MAX_RESULT_EXPIRES} (10 years)"
        )
    return int(digits)


def parse_flag(text: str) -> bool:
    """
    True from ``1``, ``true``, ``yes`` or ``on``; False from ``0``,
    ``false``, ``no`` or ``off`` (any case).

    :raises ValueError: it is neither.
    """
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not one of {', '.join(_TRUE + _FALSE)}")


def _parse_arguments_size(text: str) -> int:
    """
    The most characters of a task's arguments kept in its result: a flag
    (on: :py:data:`DEFAULT_ARGUMENTS_SIZE`, off: 0) or a number.
    """
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    try:
        return DEFAULT_ARGUMENTS_SIZE if parse_flag(stripped) else 0
    except ValueError:
        raise ValueError(f"{text!r} is not true, false or a number of characters") from None


class SettingsError(ValueError):
    """
    A setting has a value twistedq cannot use.
    """


def parse_size(text: str) -> int:
    """
    A positive size in bytes from ``8388608``, ``8192KiB`` or ``8MiB``
    (``k`` and ``M`` work too).

    :raises ValueError: it is not such a size.
    """
    stripped = text.strip()
    digits = stripped.rstrip("KkMmIiBb")
    unit = _UNITS.get(stripped[len(digits) :].strip().lower())
    if not digits.strip().isdigit() or unit is None or int(digits) < 1:
        raise ValueError(f"{text!r} is not a size in bytes such as 8388608 or 8MiB")
    return int(digits) * unit


def with_help(coerce: Callable[[str], T], text: str) -> Callable[[str], T]:
    """
    Give a coerce function of :py:mod:`twisted.python.usage` the help its
    options show (usage reads it from the function's ``coerceDoc``).
    """
    coerce.__dict__["coerceDoc"] = text
    return coerce


with_help(parse_size, "Bytes, or with a unit: 8MiB, 512KiB.")


def _django_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """
    The settings of the Django project, when there is one: Django is
    imported and ``DJANGO_SETTINGS_MODULE`` is set, or settings were
    configured in code.
    """
    import sys

    if "django" not in sys.modules and not environ.get("DJANGO_SETTINGS_MODULE"):
        return {}
    try:
        from django.conf import settings
    except ImportError:
        return {}
    if not settings.configured and not environ.get("DJANGO_SETTINGS_MODULE"):
        return {}
    from twistedq.contrib.django.conf import settings_from_django

    values = settings_from_django(settings)
    # The delivery-guarantee settings, read here until settings_from_django
    # learns them.
    keys = getattr(settings, "TWISTEDQ_SIGNING_KEYS", None)
    if keys is not None:
        if not isinstance(keys, str):
            raise SettingsError(f"TWISTEDQ_SIGNING_KEYS must be a string, not {type(keys)}")
        values["signing_keys"] = keys
    size = getattr(settings, "TWISTEDQ_MAX_MESSAGE_SIZE", None)
    if size is not None:
        values["max_message_size"] = size if isinstance(size, int) else parse_size(str(size))
    return values


@dataclass(frozen=True)
class Settings:
    """
    Where tasks and results go.  :py:obj:`from_environment` reads them:
    defaults, then the Django project's settings (when there is one), then
    the environment, then explicit arguments.

    :ivar broker_url: ``amqp://user:password@host:port/vhost``.
    :ivar result_backend: ``redis://host:port/db``, ``sqlite:///path``,
        ``memcached://host:port`` or ``django://[alias]``.
    :ivar queue: the queue tasks are published to and consumed from.
    :ivar exchange: the exchange tasks are published through.
    :ivar seed_states: report SUCCESS as the celery 0.2.0 README's ``DONE``.
    :ivar max_message_size: the largest task message the daemon takes, in
        bytes; a larger one is dead-lettered as ``too-large``, and the
        client refuses to publish it.
    :ivar signing_keys: ``id:secret,...`` (see :py:mod:`twistedq.signing`),
        or empty: when set, the client signs what it publishes and the
        daemon dead-letters messages that are unsigned or do not verify.
    :ivar publish_timeout: how long the client waits for the broker (a
        connection, then a confirm) and the store, in seconds.
    :ivar status_endpoint: the strports endpoint of the daemon's status
        site, or ``"none"``; :py:obj:`None` where no setting names one
        (``twistd twistedq`` then serves it on
        :py:data:`DEFAULT_STATUS_ENDPOINT`, ``manage.py twistedq`` serves
        none).  Django setting ``TWISTEDQ_STATUS_ENDPOINT`` only.
    :ivar status_tracebacks: show a failed task's traceback at its status
        URL.  Django setting ``TWISTEDQ_STATUS_TRACEBACKS`` only.
    :ivar result_expires: how long results, pending records, tasksets and
        claims are kept in the store, in seconds (a day by default).
    :ivar ignore_result: tasks that set no ``ignore_result`` of their own
        store nothing (see :py:attr:`twistedq.task.Task.ignore_result`).
    :ivar task_arguments_in_results: keep a task's arguments in its result,
        up to this many characters of their JSON text (0: not kept).
    """

    broker_url: str = DEFAULT_BROKER_URL
    result_backend: str = DEFAULT_RESULT_BACKEND
    queue: str = "twistedq"
    exchange: str = "twistedq"
    seed_states: bool = False
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    signing_keys: str = field(default="", repr=False)
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT
    status_endpoint: str | None = None
    status_tracebacks: bool = False
    result_expires: int = DEFAULT_RESULT_TTL
    ignore_result: bool = False
    task_arguments_in_results: int = 0

    def environment(self) -> dict[str, str]:
        """
        These settings as the environment variables
        :py:obj:`from_environment` reads.
        """
        values = {var: getattr(self, name) for name, var in _ENVIRONMENT.items()}
        values["TWISTEDQ_SEED_STATES"] = "1" if self.seed_states else "0"
        values["TWISTEDQ_MAX_MESSAGE_SIZE"] = str(self.max_message_size)
        values["TWISTEDQ_PUBLISH_TIMEOUT"] = repr(self.publish_timeout)
        values["TWISTEDQ_RESULT_EXPIRES"] = str(self.result_expires)
        values["TWISTEDQ_IGNORE_RESULT"] = "1" if self.ignore_result else "0"
        values["TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS"] = str(self.task_arguments_in_results)
        return values

    def signing(self) -> SigningKeys | None:
        """
        The :py:class:`~twistedq.signing.SigningKeys` of
        :py:attr:`signing_keys`, or :py:obj:`None` when none are set.

        :raises twistedq.signing.SigningKeyError: they cannot be understood.
        """
        if not self.signing_keys.strip():
            return None
        return SigningKeys.parse(self.signing_keys)

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """
        Defaults, then the Django project's settings (when there is one),
        then ``TWISTEDQ_BROKER_URL``, ``TWISTEDQ_RESULT_BACKEND``,
        ``TWISTEDQ_QUEUE``, ``TWISTEDQ_EXCHANGE``, ``TWISTEDQ_SEED_STATES``
        (``1`` to report SUCCESS as ``DONE``), ``TWISTEDQ_MAX_MESSAGE_SIZE``,
        ``TWISTEDQ_SIGNING_KEYS``, ``TWISTEDQ_PUBLISH_TIMEOUT``,
        ``TWISTEDQ_RESULT_EXPIRES`` (seconds), ``TWISTEDQ_IGNORE_RESULT`` (a
        flag) and ``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS`` (a flag or a number
        of characters), then
        ``overrides`` that are not :py:obj:`None`.  Other ``TWISTEDQ_*``
        names, in the environment or the Django settings, are warned about
        (:py:class:`UnknownSettingWarning`).

        :raises SettingsError: a value is not usable (see :py:meth:`validate`).
        """
        if environ is None:
            environ = os.environ
        warn_unknown_settings(environ, "environment")
        values: dict[str, Any] = _django_values(environ)
        values.update(
            {name: environ[var] for name, var in _ENVIRONMENT.items() if environ.get(var)}
        )
        flag = environ.get("TWISTEDQ_SEED_STATES", "").lower()
        if flag:
            values["seed_states"] = flag in ("1", "true", "yes", "on")
        size = environ.get("TWISTEDQ_MAX_MESSAGE_SIZE", "")
        if size:
            try:
                values["max_message_size"] = parse_size(size)
            except ValueError as e:
                raise SettingsError(f"TWISTEDQ_MAX_MESSAGE_SIZE: {e}") from None
        for variable, name, parse in _PARSED:
            text = environ.get(variable, "")
            if text:
                try:
                    values[name] = parse(text)
                except ValueError as e:
                    raise SettingsError(f"{variable}: {e}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = replace(cls(), **values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """
        Check the values that have a shape.

        :raises SettingsError: ``max_message_size`` is not between 1 byte
            and :py:data:`twistedq.message.MAX_BODY_SIZE`, or
            ``signing_keys`` is not an ``id:secret,...`` list.
        """
        if not 0 < self.max_message_size <= MAX_BODY_SIZE:
            raise SettingsError(
                f"the message size limit must be between 1 and {MAX_BODY_SIZE} bytes, "
                f"not {self.max_message_size}"
            )
        if not 1 <= self.result_expires <= MAX_RESULT_EXPIRES:
            raise SettingsError(
                f"TWISTEDQ_RESULT_EXPIRES: results must be kept from 1 second to "
                f"{MAX_RESULT_EXPIRES} (10 years), not {self.result_expires!r}"
            )
        if self.task_arguments_in_results < 0:
            raise SettingsError(
                "the size of the arguments kept in results cannot be negative, "
                f"not {self.task_arguments_in_results!r}"
            )
        if not (math.isfinite(self.publish_timeout) and self.publish_timeout > 0):
            raise SettingsError(
                f"the publish timeout must be a positive number of seconds, "
                f"not {self.publish_timeout!r}"
            )
        try:
            self.signing()
        except SigningKeyError as e:
            raise SettingsError(f"signing keys: {e}") from None


#: The environment variables parsed into a setting: variable, setting, parser.
_PARSED: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("TWISTEDQ_PUBLISH_TIMEOUT", "publish_timeout", parse_timeout),
    ("TWISTEDQ_RESULT_EXPIRES", "result_expires", parse_expiry),
    ("TWISTEDQ_IGNORE_RESULT", "ignore_result", parse_flag),
    ("TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS", "task_arguments_in_results", _parse_arguments_size),
)
