"""
The names of twistedq's settings, and the warning for a ``TWISTEDQ_*``
name that is none of them (a misspelling, most likely).  Read by
:py:mod:`twistedq.conf` and :py:mod:`twistedq.contrib.django.conf` alike.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable

__all__ = [
    "DJANGO_SETTINGS",
    "ENVIRONMENT_SETTINGS",
    "UnknownSettingWarning",
    "warn_unknown_settings",
]

#: The ``TWISTEDQ_*`` environment variables twistedq reads.
ENVIRONMENT_SETTINGS = frozenset(
    (
        "TWISTEDQ_BROKER_URL",
        "TWISTEDQ_RESULT_BACKEND",
        "TWISTEDQ_QUEUE",
        "TWISTEDQ_EXCHANGE",
        "TWISTEDQ_SIGNING_KEYS",
        "TWISTEDQ_SEED_STATES",
        "TWISTEDQ_MAX_MESSAGE_SIZE",
        "TWISTEDQ_PUBLISH_TIMEOUT",
        "TWISTEDQ_RESULT_EXPIRES",
        "TWISTEDQ_IGNORE_RESULT",
        "TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS",
        "TWISTEDQ_TASK_ROUTES",
        "TWISTEDQ_OPERATOR_TOKEN",
    )
)

#: The ``TWISTEDQ_*`` Django settings twistedq reads.
#: (The operator token of the daemon's dashboard is read from the
#: environment alone: in Django, the dashboard's actions go by the staff
#: user's permissions.)
DJANGO_SETTINGS = (ENVIRONMENT_SETTINGS - {"TWISTEDQ_OPERATOR_TOKEN"}) | {
    "TWISTEDQ_STATUS_TRACEBACKS",
    "TWISTEDQ_STATUS_ENDPOINT",
}

#: ``TWISTEDQ_*`` variables that are not settings but belong to this
#: project's test suite and scripts (``scripts/services``, ``scripts/test``).
_TOOL_VARIABLES = frozenset(
    (
        "TWISTEDQ_RABBITMQ_PORT",
        "TWISTEDQ_REDIS_PORT",
        "TWISTEDQ_MEMCACHED_PORT",
        "TWISTEDQ_POSTGRES_PORT",
        "TWISTEDQ_MARIADB_PORT",
        "TWISTEDQ_TYRANT_PORT",
        "TWISTEDQ_RABBITMQ_NODENAME",
        "TWISTEDQ_RABBITMQ_CLUSTER_PORTS",
        "TWISTEDQ_SENTINEL_PORT",
        "TWISTEDQ_SENTINEL_REDIS_PORT",
        "TWISTEDQ_REQUIRE_SERVERS",
        "TWISTEDQ_CLAIM_EXAMPLES",
        "TWISTEDQ_REGTEST_BAD_TASKS",
    )
)
_TOOL_PREFIXES = ("TWISTEDQ_TEST_", "TWISTEDQ_SERVICES_")


class UnknownSettingWarning(UserWarning):
    """
    A ``TWISTEDQ_*`` environment variable or Django setting that twistedq
    does not know (a misspelling, most likely); it is ignored.
    """


def warn_unknown_settings(names: Iterable[str], where: str) -> None:
    """
    Warn (:py:class:`UnknownSettingWarning`) about each ``TWISTEDQ_*`` name
    of ``names`` that is no setting read from ``where``, naming the closest
    known ones.

    :param where: ``"environment"`` or ``"Django"``.
    """
    known = ENVIRONMENT_SETTINGS if where == "environment" else DJANGO_SETTINGS
    for name in sorted(names):
        if (
            not name.startswith("TWISTEDQ_")
            or name in known
            or name in _TOOL_VARIABLES
            or name.startswith(_TOOL_PREFIXES)
        ):
            continue
        if name in DJANGO_SETTINGS:
            hint = "it is a Django setting, not read from the environment"
        else:
            # Compared without the prefix all of them share.
            tails = {known_name[9:]: known_name for known_name in known}
            close = difflib.get_close_matches(name[9:], sorted(tails), n=3, cutoff=0.6)
            if close:
                hint = f"did you mean {' or '.join(tails[tail] for tail in close)}?"
            else:
                hint = f"twistedq's settings are {', '.join(sorted(known))}"
        source = "environment variable" if where == "environment" else "Django setting"
        warnings.warn(
            f"{source} {name} is not a twistedq setting and is ignored; {hint}",
            UnknownSettingWarning,
            stacklevel=3,
        )
