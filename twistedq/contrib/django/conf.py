"""
twistedq's settings from ``django.conf.settings``, read when first needed.

``TWISTEDQ_BROKER_URL``, ``TWISTEDQ_RESULT_BACKEND``, ``TWISTEDQ_QUEUE``,
``TWISTEDQ_EXCHANGE``, ``TWISTEDQ_SEED_STATES`` and
``TWISTEDQ_PUBLISH_TIMEOUT`` (seconds, a positive number) are read as they
are, and so are the daemon's status site settings
``TWISTEDQ_STATUS_ENDPOINT`` (a strports endpoint, or ``"none"``) and
``TWISTEDQ_STATUS_TRACEBACKS`` (``True`` or ``False``), and the result
settings ``TWISTEDQ_RESULT_EXPIRES`` (whole seconds, or a
:py:class:`datetime.timedelta`), ``TWISTEDQ_IGNORE_RESULT`` (``True`` or
``False``) and ``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS`` (``True``, ``False``
or the most characters kept).  Any other
``TWISTEDQ_*`` setting that twistedq does not know is warned about
(:py:class:`twistedq.conf.UnknownSettingWarning`).
The celery 0.2.0 names still work, with a DeprecationWarning:
``AMQP_SERVER``, ``AMQP_PORT``, ``AMQP_USER``, ``AMQP_PASSWORD`` and
``AMQP_VHOST`` make the broker URL, and ``CELERY_BACKEND = "database"``
means ``django://``.
"""

from __future__ import annotations

import datetime
import math
import warnings
from typing import Any
from urllib.parse import quote

from twistedq.setting_names import warn_unknown_settings

__all__ = ["SEED_ALIASES", "parse_status_endpoint", "settings_from_django"]

SEED_ALIASES = ("AMQP_SERVER", "AMQP_PORT", "AMQP_USER", "AMQP_PASSWORD", "AMQP_VHOST")

_NAMES = {
    "TWISTEDQ_BROKER_URL": "broker_url",
    "TWISTEDQ_RESULT_BACKEND": "result_backend",
    "TWISTEDQ_QUEUE": "queue",
    "TWISTEDQ_EXCHANGE": "exchange",
}


#: A setting the project does not set (None is a value, and not a flag).
_UNSET = object()
_FLAGS = {
    "TWISTEDQ_SEED_STATES": "seed_states",
    "TWISTEDQ_STATUS_TRACEBACKS": "status_tracebacks",
    "TWISTEDQ_IGNORE_RESULT": "ignore_result",
}


def _improper(message: str) -> Exception:
    from django.core.exceptions import ImproperlyConfigured

    return ImproperlyConfigured(message)


def settings_from_django(settings: Any = None) -> dict[str, Any]:
    """
    The twistedq settings a Django project sets, as keyword arguments of
    :py:class:`twistedq.conf.Settings`.

    :raises django.core.exceptions.ImproperlyConfigured: a setting has the
        wrong type, or an alias names a result store twistedq has not.
    """
    if settings is None:
        from django.conf import settings as django_settings

        settings = django_settings
    values: dict[str, Any] = {}
    for setting, name in _NAMES.items():
        value = getattr(settings, setting, None)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise _improper(f"{setting} must be a non-empty string, not {value!r}")
        values[name] = value
    for setting, name in _FLAGS.items():
        flag = getattr(settings, setting, _UNSET)
        if flag is not _UNSET:
            if not isinstance(flag, bool):
                raise _improper(f"{setting} must be True or False, not {flag!r}")
            values[name] = flag
    endpoint = getattr(settings, "TWISTEDQ_STATUS_ENDPOINT", None)
    if endpoint is not None:
        values["status_endpoint"] = _status_endpoint(endpoint)
    timeout = getattr(settings, "TWISTEDQ_PUBLISH_TIMEOUT", None)
    if timeout is not None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not (math.isfinite(timeout) and timeout > 0)
        ):
            raise _improper(
                f"TWISTEDQ_PUBLISH_TIMEOUT must be a positive number of seconds, not {timeout!r}"
            )
        values["publish_timeout"] = float(timeout)
    values.update(_result_settings(settings))
    warn_unknown_settings(dir(settings), "Django")
    if "broker_url" not in values and any(hasattr(settings, n) for n in SEED_ALIASES):
        values["broker_url"] = _broker_from_seed(settings)
    if "result_backend" not in values and hasattr(settings, "CELERY_BACKEND"):
        values["result_backend"] = _backend_from_seed(settings.CELERY_BACKEND)
    return values


def _result_settings(settings: Any) -> dict[str, Any]:
    """
    ``TWISTEDQ_RESULT_EXPIRES`` and ``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS``,
    where set.
    """
    from twistedq.arguments import DEFAULT_ARGUMENTS_SIZE
    from twistedq.backends.base import MAX_RESULT_EXPIRES

    values: dict[str, Any] = {}
    expires = getattr(settings, "TWISTEDQ_RESULT_EXPIRES", None)
    if expires is not None:
        seconds = expires.total_seconds() if isinstance(expires, datetime.timedelta) else expires
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not (
                math.isfinite(seconds)
                and 1 <= seconds <= MAX_RESULT_EXPIRES
                and seconds == int(seconds)
            )
        ):
            raise _improper(
                "TWISTEDQ_RESULT_EXPIRES must be a whole number of seconds of at least 1 and "
                f"at most {MAX_RESULT_EXPIRES} (10 years), or a timedelta of them, "
                f"not {expires!r}"
            )
        values["result_expires"] = int(seconds)
    size = getattr(settings, "TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS", _UNSET)
    if size is not _UNSET:
        if isinstance(size, bool):
            values["task_arguments_in_results"] = DEFAULT_ARGUMENTS_SIZE if size else 0
        elif isinstance(size, int) and size >= 0:
            values["task_arguments_in_results"] = size
        else:
            raise _improper(
                "TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS must be True, False or the most characters "
                f"of the arguments kept, not {size!r}"
            )
    return values


def _status_endpoint(value: Any) -> str:
    if not isinstance(value, str):
        raise _improper(
            f"TWISTEDQ_STATUS_ENDPOINT must be a strports endpoint string such as "
            f"'tcp:8021:interface=127.0.0.1', or 'none', not {value!r}"
        )
    try:
        return parse_status_endpoint(value)
    except ValueError as e:
        raise _improper(f"TWISTEDQ_STATUS_ENDPOINT: {e}") from None


def parse_status_endpoint(text: str) -> str:
    """
    A strports server endpoint (``tcp:8021:interface=127.0.0.1``,
    ``unix:/run/twistedq.sock``) for the daemon's status site, or
    ``none``.  Only parsed: nothing listens.

    :raises ValueError: Twisted cannot parse it as a server endpoint.
    """
    if text.strip().lower() == "none":
        return "none"
    from twisted.internet.endpoints import serverFromString

    try:
        # Parsing builds the endpoint, which keeps the reactor unused.
        serverFromString(None, text)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{text!r} is not a server endpoint such as tcp:8021:interface=127.0.0.1, or none ({e})"
        ) from None
    return text


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is celery 0.2's setting; use {new} instead", DeprecationWarning, stacklevel=4
    )


def _broker_from_seed(settings: Any) -> str:
    _deprecated("AMQP_SERVER/AMQP_PORT/AMQP_USER/AMQP_PASSWORD/AMQP_VHOST", "TWISTEDQ_BROKER_URL")
    host = getattr(settings, "AMQP_SERVER", "127.0.0.1")
    port = getattr(settings, "AMQP_PORT", 5672)
    user = getattr(settings, "AMQP_USER", "guest")
    password = getattr(settings, "AMQP_PASSWORD", "guest")
    vhost = getattr(settings, "AMQP_VHOST", "/")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise _improper(f"AMQP_PORT must be a port number, not {port!r}") from None
    for name, value in (
        ("AMQP_SERVER", host),
        ("AMQP_USER", user),
        ("AMQP_PASSWORD", password),
        ("AMQP_VHOST", vhost),
    ):
        if not isinstance(value, str):
            raise _improper(f"{name} must be a string, not {value!r}")
    return (
        f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/"
        f"{quote(vhost, safe='')}"
    )


def _backend_from_seed(backend: Any) -> str:
    _deprecated("CELERY_BACKEND", "TWISTEDQ_RESULT_BACKEND")
    if backend == "database":
        return "django://"
    raise _improper(
        f"CELERY_BACKEND = {backend!r} has no twistedq equivalent: set "
        "TWISTEDQ_RESULT_BACKEND to django://, redis://host:port/db or sqlite:///path"
    )
