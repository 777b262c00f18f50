"""
Routing of tasks to queues by name, as Celery's ``task_routes``::

    TWISTEDQ_TASK_ROUTES = {"reports.*": "reports", "mail.send": "mail"}

in the Django settings, or in the environment as JSON or as
``name=queue,name=queue`` (``TWISTEDQ_TASK_ROUTES='reports.*=reports'``),
or in code with :py:func:`set_task_routes` (for the process) or a
client's ``task_routes`` attribute (for what the task API publishes
through that client: ``client.task_routes = {"mail.*": "mail"}``).

A task is published to, in this order: the queue given to the call
(``apply_async(queue=...)``, ``publish_task(queue=...)``), its class's
``queue``, the first route whose name or pattern (``fnmatch``: ``*``,
``?``, ``[ab]``) matches its name, else the client's queue
(``TWISTEDQ_QUEUE``).  The daemons must consume that queue
(``twistd twistedq -q default,reports``).
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["TaskRoutes", "route", "set_task_routes", "task_routes"]

#: The name of the setting.
SETTING = "TWISTEDQ_TASK_ROUTES"


class TaskRoutes:
    """
    Task name to queue: exact names first, then patterns in the order given.

    :raises ValueError: a name or a queue is not a non-empty string.
    """

    def __init__(self, routes: Mapping[str, str] | None = None) -> None:
        self.exact: dict[str, str] = {}
        self.patterns: list[tuple[str, str]] = []
        for name, queue in (routes or {}).items():
            if not isinstance(name, str) or not name or not isinstance(queue, str) or not queue:
                raise ValueError(
                    f"a route maps a task name to a queue name, not {name!r}: {queue!r}"
                )
            if any(c in name for c in "*?["):
                self.patterns.append((name, queue))
            else:
                self.exact[name] = queue

    def __bool__(self) -> bool:
        return bool(self.exact or self.patterns)

    def __repr__(self) -> str:
        return f"TaskRoutes({dict(self.exact, **dict(self.patterns))!r})"

    def queue_for(self, name: str) -> str | None:
        """
        The queue of task ``name``, or None when no route names it.
        """
        queue = self.exact.get(name)
        if queue is not None or not self.patterns:
            return queue
        for pattern, queue in self.patterns:
            if fnmatch.fnmatchcase(name, pattern):
                return queue
        return None

    @classmethod
    def parse(cls, value: Any) -> TaskRoutes:
        """
        Routes from a setting: a mapping, a JSON object, or
        ``name=queue,name=queue``.

        :raises ValueError: it is none of these.
        """
        if isinstance(value, Mapping):
            return cls(value)
        if not isinstance(value, str):
            raise ValueError(f"{SETTING} must be a dict or a string, not {type(value).__name__}")
        text = value.strip()
        if text.startswith("{"):
            try:
                routes = json.loads(text)
            except ValueError as e:
                raise ValueError(f"{SETTING} is not a JSON object: {e}") from None
            if not isinstance(routes, dict):
                raise ValueError(f"{SETTING} is not a JSON object")
            return cls(routes)
        pairs: dict[str, str] = {}
        for entry in text.split(","):
            if not entry.strip():
                continue
            name, equals, queue = entry.partition("=")
            if not equals:
                raise ValueError(f"{SETTING}: {entry.strip()!r} is not name=queue")
            pairs[name.strip()] = queue.strip()
        return cls(pairs)


_configured: TaskRoutes | None = None


def _from_settings() -> TaskRoutes:
    """
    The routes of ``TWISTEDQ_TASK_ROUTES``: the environment's, else the
    Django project's when there is one; none if neither sets it.
    """
    text = os.environ.get(SETTING)
    if text is not None:
        return TaskRoutes.parse(text)
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        try:
            from django.conf import settings
        except ImportError:
            return TaskRoutes()
        value = getattr(settings, SETTING, None)
        if value is not None:
            return TaskRoutes.parse(value)
    return TaskRoutes()


def task_routes() -> TaskRoutes:
    """
    The routes in force: those given to :py:func:`set_task_routes`, else
    the setting's (read once).
    """
    global _configured
    if _configured is None:
        _configured = _from_settings()
    return _configured


def set_task_routes(routes: Mapping[str, str] | TaskRoutes | None) -> None:
    """
    Route tasks by these names and patterns from now on in this process
    (None: read the setting again on next use).
    """
    global _configured
    if routes is None or isinstance(routes, TaskRoutes):
        _configured = routes
    else:
        _configured = TaskRoutes(routes)


def route(
    name: str, queue: str | None = None, task_queue: str | None = None, client: Any = None
) -> str | None:
    """
    The queue a task named ``name`` is published to: ``queue`` (given to
    the call), else ``task_queue`` (its class's), else its route; None
    means the client's queue.

    :param client: the client publishing it: its ``task_routes``
        attribute (a mapping or :py:class:`TaskRoutes`), when it has one,
        is used instead of the process's routes.
    """
    if queue:
        return queue
    if task_queue:
        return task_queue
    own = getattr(client, "task_routes", None)
    if own is None:
        routes = task_routes()
    elif isinstance(own, TaskRoutes):
        routes = own
    else:
        routes = TaskRoutes(own)
    return routes.queue_for(name) if routes else None
