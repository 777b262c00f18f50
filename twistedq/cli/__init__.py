"""
The ``twistedq`` command (``python -m twistedq.cli``): see and steer a
running cluster, in the style of ``celery inspect`` and ``rabbitmqctl``.

``status``, ``ping``, ``inspect active|reserved|scheduled|registered|stats``,
``events``, ``revoke ID... [--terminate]``, ``result ID``, ``purge
[QUEUE] --yes`` and ``deadletter list|show|republish|purge``; ``--json``
on each.  Exit status: 0 done, 1 what was asked about failed or was not
found or no daemon answered, 2 usage error, 3 broker or result store
unreachable (one line on stderr naming its URL).
"""

from __future__ import annotations

from twistedq.cli.main import main, parser, run

__all__ = ["main", "parser", "run"]
