"""
The seed-compatible task API: ``tasks`` (the default registry) and
``delay_task``.

These module-level names are thin facades over a default
:py:obj:`twistedq.registry.TaskRegistry` and a default
:py:obj:`twistedq.client.Client`; code that wants its own passes those around
instead.
"""

from __future__ import annotations

from typing import Any

from twistedq.registry import AlreadyRegistered, NotRegistered, TaskRegistry

__all__ = ["AlreadyRegistered", "NotRegistered", "delay_task", "tasks"]

#: The default task registry, filled by the ``tasks.register(...)`` calls of
#: task modules.
tasks = TaskRegistry()


def delay_task(task_name: str, *args: Any, **kwargs: Any) -> Any:
    """
    Publish a task by name through the default client and return its
    :py:obj:`twistedq.result.AsyncResult`.
    """
    from twistedq.client import default_client

    return default_client().delay_task(task_name, *args, **kwargs)
