"""
Settings shared by the daemon and the client: defaults, overridden by the
Django project's settings (when there is one), overridden by the
environment, overridden by explicit arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["DEFAULT_BROKER_URL", "DEFAULT_RESULT_BACKEND", "Settings"]

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_RESULT_BACKEND = "sqlite://"
DEFAULT_STATUS_ENDPOINT = "tcp:8021:interface=127.0.0.1"

_ENVIRONMENT = {
    "broker_url": "TWISTEDQ_BROKER_URL",
    "result_backend": "TWISTEDQ_RESULT_BACKEND",
    "queue": "TWISTEDQ_QUEUE",
    "exchange": "TWISTEDQ_EXCHANGE",
}


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

    return settings_from_django(settings)


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
    """

    broker_url: str = DEFAULT_BROKER_URL
    result_backend: str = DEFAULT_RESULT_BACKEND
    queue: str = "twistedq"
    exchange: str = "twistedq"
    seed_states: bool = False

    def environment(self) -> dict[str, str]:
        """
        These settings as the environment variables
        :py:obj:`from_environment` reads.
        """
        values = {var: getattr(self, name) for name, var in _ENVIRONMENT.items()}
        values["TWISTEDQ_SEED_STATES"] = "1" if self.seed_states else "0"
        return values

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """
        Defaults, then the Django project's settings (when there is one),
        then ``TWISTEDQ_BROKER_URL, ``TWISTEDQ_RESULT_BACKEND``,
        ``TWISTEDQ_QUEUE``, ``TWISTEDQ_EXCHANGE`` and ``TWISTEDQ_SEED_STATES``
        (``1`` to report SUCCESS as ``DONE``), then ``overrides`` that are
        not :py:obj:`None`.
        """
        if environ is None:
            environ = os.environ
        values: dict[str, Any] = _django_values(environ)
        values.update(
            {name: environ[var] for name, var in _ENVIRONMENT.items() if environ.get(var)}
        )
        flag = environ.get("TWISTEDQ_SEED_STATES", "").lower()
        if flag:
            values["seed_states"] = flag in ("1", "true", "yes", "on")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)
