"""
The task registry: task names to the callables that run them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["AlreadyRegistered", "NotRegistered", "TaskRegistry", "import_task_modules"]


class AlreadyRegistered(KeyError):
    """
    A task of that name is registered already.
    """


class NotRegistered(KeyError):
    """
    No task of that name is registered.
    """

    def __str__(self) -> str:
        return f"no task named {self.args[0]!r} is registered"


class TaskRegistry:
    """
    Task names to callables.  A registry is an ordinary object: the
    module-level ``twistedq.task.tasks`` is just the default one.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, Callable[..., Any]] = {}

    def register(self, task: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
        """
        Register ``task`` under ``name`` (by default its ``name`` attribute,
        else its qualified name).

        :raises AlreadyRegistered: another task has that name.
        """
        if name is None:
            name = getattr(task, "name", None) or f"{task.__module__}.{task.__qualname__}"
        existing = self._tasks.get(name)
        if existing is not None and existing is not task:
            raise AlreadyRegistered(name)
        self._tasks[name] = task
        return task

    def unregister(self, name: str) -> None:
        """
        :raises NotRegistered: no task has that name.
        """
        try:
            del self._tasks[name]
        except KeyError:
            raise NotRegistered(name) from None

    def __getitem__(self, name: str) -> Callable[..., Any]:
        try:
            return self._tasks[name]
        except KeyError:
            raise NotRegistered(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._tasks))

    def get_all(self) -> dict[str, Callable[..., Any]]:
        """
        A copy of the name-to-task mapping.
        """
        return dict(self._tasks)


def import_task_modules(names: list[str]) -> None:
    """
    Import the modules that register tasks.  An error inside a module is
    raised, never swallowed.
    """
    for name in names:
        importlib.import_module(name)
