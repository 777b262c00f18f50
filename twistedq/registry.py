"""
The task registry: task names to the callables that run them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

__all__ = [
    "AlreadyRegistered",
    "NamedTask",
    "NotRegistered",
    "TaskRegistry",
    "import_task_modules",
    "tasks",
]


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


class NamedTask:
    """
    A task object that carries its name: what the registry knows of
    :py:class:`twistedq.task.Task`, its subclass.  The registry registers a
    class of it as an instance, under that name.

    :cvar name: the registered name (an instance may hold its own).
    :cvar periodic: listed by :py:meth:`TaskRegistry.get_all_periodic`.
    """

    name: str | None = None
    periodic: ClassVar[bool] = False

    def check_registrable(self) -> None:
        """
        Called when the task is registered.

        :raises ValueError: the task cannot run as it is declared.
        """

    def same_task(self, other: object) -> bool:
        """
        Whether ``other``, registered under this task's name already, is
        this task: another instance of the same class is.
        """
        return type(other) is type(self)


class TaskRegistry:
    """
    Task names to callables.  A registry is an ordinary object: the
    module-level ``twistedq.task.tasks`` is just the default one.

    A task is a plain function registered under a name, a
    :py:class:`twistedq.task.Task` subclass (registered as an instance,
    under its ``name``) or a :py:class:`twistedq.task.Task` instance (any
    :py:class:`NamedTask`, in fact).
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
        given = task
        if isinstance(task, type) and issubclass(task, NamedTask):
            task = task()
        if isinstance(task, NamedTask):
            name = name or task.name
            if not name:
                raise ValueError(f"task class {type(task).__qualname__} has no name")
            task.check_registrable()
        elif not callable(task):
            raise TypeError(f"a task must be callable, not {type(task).__name__}")
        elif name is None:
            name = getattr(task, "name", None) or f"{task.__module__}.{task.__qualname__}"
        existing = self._tasks.get(name)
        if existing is not None and not (
            existing is task or (isinstance(task, NamedTask) and task.same_task(existing))
        ):
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
        return {n: t for n, t in self._tasks.items() if isinstance(t, NamedTask) and t.periodic}

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


def import_task_modules(names: list[str]) -> None:
    """
    Import the modules that register tasks.  An error inside a module is
    raised, never swallowed.
    """
    for name in names:
        importlib.import_module(name)


#: The default task registry, filled by the ``tasks.register(...)`` calls of
#: task modules (:py:data:`twistedq.task.tasks` is this one).
tasks = TaskRegistry()
