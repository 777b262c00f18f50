"""
twistedq for Django: ``INSTALLED_APPS += ["twistedq.contrib.django"]``.

The app brings settings read from ``django.conf.settings``, the models of
the database result backend (``TWISTEDQ_RESULT_BACKEND = "django://"``),
their admin, the seed's JSON views (``include("twistedq.contrib.django.urls")``)
and :py:func:`delay_on_commit`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["delay_on_commit"]


def delay_on_commit(task: Any, *args: Any, **kwargs: Any) -> Any:
    """
    Publish a task (a name, a Task class or instance, or a ``@task``
    function) once the current database transaction commits, so the task
    never reads rows that are not there yet; nothing is published if it
    rolls back.  Outside a transaction it publishes at once.  ``using``
    names the database alias whose transaction counts; it is not passed to
    the task.  A task given as a Task is published as its ``delay`` would
    (its queue, rate limit, priority, ``ignore_result``).  Returns the
    :py:class:`~twistedq.result.AsyncResult`, whose id is chosen now (an
    :py:class:`~twistedq.task.IgnoredResult` when the task's
    ``ignore_result``, else the setting ``TWISTEDQ_IGNORE_RESULT``, says
    to store nothing).
    """
    from django.db import transaction

    from twistedq.message import new_task_id
    from twistedq.publishing import client_or_default
    from twistedq.result import AsyncResult
    from twistedq.task import IgnoredResult, Task, _task_name, publish_task

    name = _task_name(task)
    task_id = new_task_id()
    using = kwargs.pop("using", None)
    ignore_result = None
    if isinstance(task, Task) or (isinstance(task, type) and issubclass(task, Task)):
        ignore_result = task.ignore_result

        def publish() -> None:
            task.apply_async(args, kwargs, task_id=task_id)

    else:

        def publish() -> None:
            publish_task(name, args, kwargs, task_id=task_id)

    if ignore_result is None:
        ignore_result = client_or_default(None).settings.ignore_result
    transaction.on_commit(publish, using=using)
    return (IgnoredResult if ignore_result else AsyncResult)(task_id)
