"""
The task registry: task names to the callables that run them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["AlreadyRegistered", "NotRegistered", "TaskRegistry", "import_task_modules"]


class AlreadyRegistered(KeyError):
    """
    A different task of that name is registered already.
    """

    def __str__(self) -> str:
        return f"a different task named {self.args[0]!r} is registered already"


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

    A task is a plain function registered under a name, a
    :py:class:`twistedq.task.Task` subclass (registered as an instance,
    under its ``name``) or a :py:class:`twistedq.task.Task` instance.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, Callable[..., Any]] = {}

    def register(self, task: Any, name: str | None = None) -> Any:
        """
        Register ``task`` under ``name`` (by default its ``name``
        attribute; a function without one gets its qualified name).
        Registering the same function, or the same class, again does
        nothing.  Returns what it was given, so it works as a decorator.

        :raises AlreadyRegistered: a different task has that name.
        :raises ValueError: a task class without a name, or a periodic task
            without a positive ``run_every``.
        """
        from twistedq.task import PeriodicTask, Task

        given = task
        if isinstance(task, type) and issubclass(task, Task):
            task = task()
        if isinstance(task, Task):
            name = name or task.name
            if not name:
                raise ValueError(f"task class {type(task).__qualname__} has no name")
            if isinstance(task, PeriodicTask):
                task.schedule()
        elif not callable(task):
            raise TypeError(f"a task must be callable, not {type(task).__name__}")
        elif name is None:
            name = getattr(task, "name", None) or f"{task.__module__}.{task.__qualname__}"
        existing = self._tasks.get(name)
        if existing is not None and not _same_task(existing, task):
            raise AlreadyRegistered(name)
        if existing is None:
            self._tasks[name] = task
        return given

    def unregister(self, name: str | Any) -> None:
        """
        Remove a task by name (or by the task class or instance itself).

        :raises NotRegistered: no task has that name.
        """
        if not isinstance(name, str):
            name = getattr(name, "name", None) or name
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

    def __len__(self) -> int:
        return len(self._tasks)

    def get_all(self) -> dict[str, Callable[..., Any]]:
        """
        A copy of the name-to-task mapping.
        """
        return dict(self._tasks)

    def get_all_periodic(self) -> dict[str, Any]:
        """
        The registered :py:class:`twistedq.task.PeriodicTask` instances, by
        name.
        """
        from twistedq.task import PeriodicTask

        return {n: t for n, t in self._tasks.items() if isinstance(t, PeriodicTask)}

    def autodiscover(self) -> list[str]:
        """
        Import the ``tasks`` module of every Django application in
        ``INSTALLED_APPS``, as the Django admin discovers ``admin`` modules.
        An application without one is skipped; an error raised inside an
        existing ``tasks`` module (an ``ImportError`` included) propagates.

        :return: the names of the modules imported.
        :raises django.core.exceptions.ImproperlyConfigured: Django's
            settings are not configured.
        """
        from django.apps import apps
        from django.conf import settings

        if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(
                "tasks.autodiscover() needs Django's settings: set "
                "DJANGO_SETTINGS_MODULE or call settings.configure() first"
            )
        if not apps.ready:
            import django

            django.setup()
        imported = []
        for app in apps.get_app_configs():
            module = f"{app.name}.tasks"
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as e:
                if e.name != module:
                    raise
                continue
            imported.append(module)
        return imported


def _same_task(existing: Any, task: Any) -> bool:
    from twistedq.task import Task

    if existing is task:
        return True
    return isinstance(task, Task) and type(existing) is type(task) and not _is_function_task(task)


def _is_function_task(task: Any) -> bool:
    from twistedq.task import FunctionTask

    return isinstance(task, FunctionTask)


def import_task_modules(names: list[str]) -> None:
    """
    Import the modules that register tasks.  An error inside a module is
    raised, never swallowed.
    """
    for name in names:
        importlib.import_module(name)
