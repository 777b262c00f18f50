"""
Workflows, spelled as Celery spells them: signatures, :py:class:`chain`,
:py:class:`group` and :py:class:`chord`, and the ``link`` and
``link_error`` callbacks::

    from twistedq.canvas import chain, chord, group

    chain(add.s(2, 2), mul.s(4), mul.s(10)).delay().get()    # 160
    (add.s(2, 2) | mul.s(4)).delay().get()                  # 16
    group(add.s(i, i) for i in range(10)).delay().join()    # [0, 2, ..., 18]
    chord(add.s(i, i) for i in range(10))(tsum.s()).get()   # 90
    add.apply_async((2, 2), link=mul.s(3), link_error=log_error.s())

A workflow travels in its messages (:py:mod:`twistedq.message`), signed
with the rest: no process keeps it in memory.  The daemon that stores a
task's outcome publishes what follows (the next step, the links, the
chord's callback) before it acknowledges the task's message; see
``doc/workflows.rst`` for what is guaranteed across crashes.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from twistedq.message import MAX_CHAIN, TaskMessage, check_signature, new_task_id
from twistedq.publishing import abandon_taskset, client_or_default, message_times
from twistedq.result import AsyncResult, TaskSetResult

if TYPE_CHECKING:
    import datetime

    from twistedq.client import Client
    from twistedq.task import Task

__all__ = [
    "ChordError",
    "Signature",
    "chain",
    "chord",
    "chord_member_id",
    "group",
    "maybe_signature",
    "signature",
]

#: The options a signature may hold (they travel in the message).
SIGNATURE_OPTIONS = frozenset(("task_id", "queue", "countdown", "link", "link_error"))


class ChordError(Exception):
    """
    Stored as the FAILURE of a chord's callback when a member of its
    header failed or was revoked: the callback did not run.
    """


def chord_member_id(chord_id: str, index: int) -> str:
    """
    The task id of the chord's member at ``index``: derived from the
    chord's id, so that whichever daemon completes the count can read every
    member's result without a list of ids in each message.
    """
    return str(uuid.uuid5(uuid.UUID(chord_id), f"member-{index}"))


def _task_name(task: Any) -> str:
    if isinstance(task, str):
        return task
    name = getattr(task, "name", None)
    if isinstance(name, str) and name:
        return name
    raise TypeError(f"{task!r} is neither a task name nor a named task")


class Signature(dict):  # type: ignore[type-arg, unused-ignore]
    """
    A task call that can be passed around: the task's name, arguments,
    options and whether it is immutable.  It is a ``dict`` of JSON values
    (``{"task", "args", "kwargs", "options", "immutable"}``), the very
    document that travels in a message, so ``json.dumps(sig)`` works.

    Usually made by ``add.s(2, 2)``, ``add.si(2, 2)`` or
    ``add.signature((2, 2), countdown=10)``.

    :param task: the task, or its registered name.
    :param options: ``task_id``, ``queue``, ``countdown`` (seconds from
        when it is published), ``link`` and ``link_error`` (signatures).
    :param immutable: the parent's result (or, for an errback, the failed
        task's id) is not prepended to its arguments.
    :raises TypeError: an unknown option.
    """

    def __init__(
        self,
        task: str | Task | type[Task],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        immutable: bool = False,
    ) -> None:
        super().__init__(
            task=_task_name(task),
            args=list(args),
            kwargs=dict(kwargs or {}),
            options={},
            immutable=bool(immutable),
        )
        self.set(**(options or {}))

    @property
    def task(self) -> str:
        """
        The task's registered name.
        """
        return str(self["task"])

    @property
    def args(self) -> list[Any]:
        return list(self["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self["kwargs"])

    @property
    def options(self) -> dict[str, Any]:
        return dict(self["options"])

    @property
    def immutable(self) -> bool:
        return bool(self["immutable"])

    def __repr__(self) -> str:
        args = ", ".join(
            [repr(a) for a in self["args"]] + [f"{k}={v!r}" for k, v in self["kwargs"].items()]
        )
        return f"{self.task}{'!' if self.immutable else ''}({args})"

    def set(self, **options: Any) -> Signature:
        """
        Set options (see the class); return the signature itself.
        ``link`` and ``link_error`` replace the callbacks.

        :raises TypeError: an unknown option.
        """
        unknown = options.keys() - SIGNATURE_OPTIONS
        if unknown:
            raise TypeError(f"unknown signature options {sorted(unknown)}")
        for key, value in options.items():
            if key in ("link", "link_error"):
                wire = "links" if key == "link" else "errlinks"
                self["options"].pop(wire, None)
                for callback in _signatures(value):
                    self._add(wire, callback)
            elif value is None:
                self["options"].pop(key, None)
            else:
                self["options"][key] = value
        return self

    def _add(self, wire: str, callback: Signature) -> Signature:
        self["options"].setdefault(wire, []).append(dict(callback))
        return callback

    def link(self, callback: Signature) -> Signature:
        """
        Publish ``callback`` with this task's result when it succeeds;
        return ``callback``.
        """
        return self._add("links", maybe_signature(callback))

    def link_error(self, errback: Signature) -> Signature:
        """
        Publish ``errback`` with this task's id when it fails; return
        ``errback``.
        """
        return self._add("errlinks", maybe_signature(errback))

    def clone(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Signature:
        """
        A copy with ``args`` added after its own (``add.s(2).clone((3,))``
        is ``add.s(2, 3)``), ``kwargs`` merged over its own and ``options``
        set.
        """
        copy = Signature.from_document(self)
        copy["args"] = [*self["args"], *args]
        copy["kwargs"] = {**self["kwargs"], **(kwargs or {})}
        return copy.set(**options)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Signature:
        """
        A signature from its JSON document (as :py:func:`json.loads` gives
        it back).

        :raises twistedq.message.MessageError: the document is not a valid
            signature.
        """
        check_signature(document)
        options = copy.deepcopy(dict(document.get("options", {})))
        made = cls(
            document["task"],
            document.get("args", ()),
            document.get("kwargs"),
            immutable=document.get("immutable", False),
        )
        made["options"] = options
        return made

    def message(
        self,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        chain: Sequence[Signature] = (),
        errlinks: Sequence[Signature] = (),
        eta: datetime.datetime | float | None = None,
        expires: datetime.datetime | datetime.timedelta | float | None = None,
        taskset: str | None = None,
        chord: Signature | None = None,
    ) -> TaskMessage:
        """
        The message that runs this signature, ``args`` before its own
        arguments (ignored when immutable), with these workflow fields.
        """
        options = self["options"]
        head = () if self.immutable else tuple(args)
        eta_text, expires_text = message_times(options.get("countdown"), eta, expires)
        return TaskMessage(
            id=options.get("task_id") or new_task_id(),
            task=self.task,
            args=(*head, *self["args"]),
            kwargs={**self["kwargs"], **(kwargs or {})},
            taskset=taskset,
            eta=eta_text,
            expires=expires_text,
            links=tuple(options.get("links", ())),
            errlinks=(*options.get("errlinks", ()), *map(dict, errlinks)),
            chain=tuple(dict(step) for step in chain),
            chord=None if chord is None else dict(chord),
        )

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        link: Signature | Sequence[Signature] | None = None,
        link_error: Signature | Sequence[Signature] | None = None,
        eta: datetime.datetime | float | None = None,
        expires: datetime.datetime | datetime.timedelta | float | None = None,
        client: Client | None = None,
        **options: Any,
    ) -> AsyncResult:
        """
        Publish this signature (``args`` before its own arguments, unless
        immutable); return its :py:class:`~twistedq.result.AsyncResult`.

        :param link: callbacks published with the result on success.
        :param link_error: errbacks published with the task id on failure.
        :param options: signature options for this call (``countdown``,
            ``queue``, ``task_id``).
        """
        call = self.clone(**options) if options else self
        if link is not None or link_error is not None:
            call = call.clone()
            for callback in _signatures(link):
                call.link(callback)
            for errback in _signatures(link_error):
                call.link_error(errback)
        message = call.message(args, kwargs, eta=eta, expires=expires)
        return _publish([message], call["options"].get("queue"), client)[0]

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """
        Publish this signature with these extra arguments.
        """
        return self.apply_async(args, kwargs)

    def __or__(self, other: Any) -> chain:  # type: ignore[override]
        if isinstance(other, (Signature, chain)):
            return chain(self, other)
        return NotImplemented


def signature(
    task: str | Task | type[Task] | dict[str, Any],
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> Signature:
    """
    A :py:class:`Signature` of ``task`` (a name or a task), or the one a
    signature document describes.
    """
    if isinstance(task, dict):
        return Signature.from_document(task)
    return Signature(task, args, kwargs, options)


def maybe_signature(value: Any) -> Signature:
    """
    ``value`` as a :py:class:`Signature`: itself, or built from its
    document.

    :raises TypeError: it is neither.
    """
    if isinstance(value, Signature):
        return value
    if isinstance(value, dict):
        return Signature.from_document(value)
    raise TypeError(_not_a_signature(value))


def _not_a_signature(value: Any) -> str:
    """
    Why ``value`` cannot stand where a signature goes, and what to do.
    """
    if isinstance(value, str):
        return f"{value!r} is a task name, not a signature: use {value}.s() or signature({value!r})"
    if isinstance(value, (chain, group, chord)):
        kind = type(value).__name__
        return (
            f"a {kind} cannot be used where a signature goes (a link, a link_error, a "
            "group's or a chord's task, a chord's callback): workflows do not nest "
            "in twistedq; see doc/from-celery.rst"
        )
    return f"{value!r} is not a signature (a Signature, or its dict document)"


def callback_documents(value: Any) -> tuple[dict[str, Any], ...]:
    """
    The documents of a callback option (``link``, ``link_error``): a
    signature, a list of them, or :py:obj:`None`.
    """
    return tuple(dict(callback) for callback in _signatures(value))


def _signatures(value: Any) -> list[Signature]:
    if value is None:
        return []
    if isinstance(value, (dict, str, chain, group, chord)):
        return [maybe_signature(value)]
    return [maybe_signature(item) for item in value]


def _publish(
    messages: list[TaskMessage], queue: str | None, client: Client | None
) -> list[AsyncResult]:
    chosen = client_or_default(client)
    for message in messages:
        message.check()
    if len(messages) == 1:
        chosen.publish(messages[0], queue)
    else:
        chosen.publish_many(messages, queue)
    return [AsyncResult(message.id, chosen) for message in messages]


def _flatten(tasks: Iterable[Any]) -> list[Signature]:
    steps: list[Signature] = []
    for item in tasks:
        if isinstance(item, chain):
            steps.extend(item.tasks)
        elif isinstance(item, (group, chord)):
            raise TypeError(f"a chain of signatures only: {type(item).__name__} in a chain")
        else:
            steps.append(maybe_signature(item))
    return steps


class chain:  # noqa: N801 - Celery's spelling
    """
    Tasks run one after the other, each result the first argument of the
    next (unless the next is immutable)::

        chain(add.s(2, 2), mul.s(4), mul.s(10)).delay().get()   # 160

    Every task id is chosen at publish, so the result of the last task
    reaches the others through :py:attr:`AsyncResult.parent
    <twistedq.result.AsyncResult.parent>`.  A step that fails ends the
    chain: the steps after it never run (their results stay PENDING).
    """

    def __init__(self, *tasks: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], (dict, chain)):
            tasks = tuple(tasks[0])
        self.tasks: list[Signature] = _flatten(tasks)
        if not self.tasks:
            raise ValueError("a chain needs at least one task")
        if len(self.tasks) > MAX_CHAIN:
            raise ValueError(f"a chain has at most {MAX_CHAIN} steps, not {len(self.tasks)}")

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks))

    def __or__(self, other: Any) -> chain:
        if isinstance(other, (Signature, chain)):
            return chain(self, other)
        return NotImplemented

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        link: Signature | Sequence[Signature] | None = None,
        link_error: Signature | Sequence[Signature] | None = None,
        client: Client | None = None,
        **options: Any,
    ) -> AsyncResult:
        """
        Publish the first task (``args`` and ``kwargs`` go to it), the
        others travelling in its message; return the last task's
        :py:class:`~twistedq.result.AsyncResult`, whose ``parent`` is the
        one before.

        :param link: callbacks of the last task.
        :param link_error: errbacks added to every task of the chain.
        :param options: options of the first task (``countdown``, ``eta``,
            ``expires``, ``queue``).
        """
        steps = [step.clone() for step in self.tasks]
        for step in steps:
            step["options"].setdefault("task_id", new_task_id())
        for callback in _signatures(link):
            steps[-1].link(callback)
        errbacks = _signatures(link_error)
        first = steps[0]
        eta, expires = options.pop("eta", None), options.pop("expires", None)
        if options:
            first.set(**options)
        message = first.message(
            args,
            kwargs,
            chain=[_with_errlinks(step, errbacks) for step in steps[1:]],
            errlinks=errbacks,
            eta=eta,
            expires=expires,
        )
        parent = _publish([message], first["options"].get("queue"), client)[0]
        for step in steps[1:]:
            parent = AsyncResult(step["options"]["task_id"], parent._client, parent=parent)
        return parent

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)


def _with_errlinks(step: Signature, errbacks: list[Signature]) -> Signature:
    for errback in errbacks:
        step.link_error(errback)
    return step


class group:  # noqa: N801 - Celery's spelling
    """
    Tasks run in parallel as one taskset (the :py:class:`~twistedq.task.TaskSet`
    of different tasks)::

        group(add.s(i, i) for i in range(10)).delay().join()   # [0, 2, ..., 18]

    ``group(...) | callback`` is a :py:class:`chord`.
    """

    def __init__(self, *tasks: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], (dict, str, chain, group, chord)):
            tasks = tuple(tasks[0])
        self.tasks: list[Signature] = [maybe_signature(task) for task in tasks]

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.tasks))})"

    def __or__(self, other: Any) -> chord:
        if isinstance(other, Signature):
            return chord(self, other)
        return NotImplemented

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        client: Client | None = None,
    ) -> TaskSetResult:
        """
        Record the taskset, publish every task (``args`` before each one's
        own) and return the :py:class:`~twistedq.result.TaskSetResult`.

        :raises: as :py:meth:`twistedq.task.TaskSet.run` does.
        """
        return _publish_group(self.tasks, args, kwargs, queue, client, new_task_id(), None)

    def delay(self, *args: Any, **kwargs: Any) -> TaskSetResult:
        return self.apply_async(args, kwargs)


def _publish_group(
    tasks: list[Signature],
    args: Sequence[Any],
    kwargs: dict[str, Any] | None,
    queue: str | None,
    client: Client | None,
    taskset_id: str,
    callback: Signature | None,
) -> TaskSetResult:
    """
    Publish a group as the taskset ``taskset_id``; with a ``callback``, as
    the header of its chord: members have ids derived from the chord's.
    """
    chosen = client_or_default(client)
    messages = []
    for index, member in enumerate(tasks):
        if callback is not None:
            member = member.clone(task_id=chord_member_id(taskset_id, index))
        messages.append(member.message(args, kwargs, taskset=taskset_id, chord=callback))
    for message in messages:
        message.check()
    chosen.create_taskset(taskset_id, len(messages))
    by_queue: dict[str | None, list[TaskMessage]] = {}
    for member, message in zip(tasks, messages, strict=True):
        by_queue.setdefault(member["options"].get("queue") or queue, []).append(message)
    confirmed: set[str] = set()
    for target, batch in by_queue.items():
        for start in range(0, len(batch), 1000):
            chunk = batch[start : start + 1000]
            try:
                chosen.publish_many(chunk, target)
            except Exception as error:
                confirmed.update(getattr(error, "confirmed_ids", ()))
                abandon_taskset(chosen, taskset_id, messages, confirmed, error)
                raise
            confirmed.update(m.id for m in chunk)
    return TaskSetResult(taskset_id, [AsyncResult(m.id, chosen) for m in messages], chosen)


class chord:  # noqa: N801 - Celery's spelling
    """
    A group whose callback runs once, with the list of the members' results
    (in member order), when every member is done::

        chord([add.s(i, i) for i in range(10)], tsum.s()).delay().get()   # 90
        chord(add.s(i, i) for i in range(10))(tsum.s()).get()             # the same

    The members are counted in the result store (the taskset of the
    chord's id), each once however often it is stored; the daemon that
    sees the count complete publishes the callback, whose task id is fixed
    before anything is published, so a second publish (after a crash, or
    by two members finishing together) runs nothing twice.  If a member
    fails or is revoked the callback does not run: a FAILURE
    (:py:class:`ChordError`) is stored under its id
    and its errbacks are published.
    """

    def __init__(self, header: Any, body: Signature | None = None) -> None:
        self.header = header if isinstance(header, group) else group(header)
        self.body = None if body is None else maybe_signature(body)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def __call__(self, body: Signature | None = None, **options: Any) -> AsyncResult:
        """
        Publish the chord with ``body`` as its callback (Celery's
        ``chord(header)(callback)``).
        """
        if body is not None:
            return chord(self.header, body).apply_async(**options)
        return self.apply_async(**options)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        client: Client | None = None,
    ) -> AsyncResult:
        """
        Publish the header's members (``args`` before each one's own);
        return the callback's :py:class:`~twistedq.result.AsyncResult`,
        whose ``parent`` is the header's
        :py:class:`~twistedq.result.TaskSetResult`.  An empty header
        publishes the callback at once, with an empty list.
        """
        if self.body is None:
            raise ValueError("a chord needs a callback")
        callback = self.body.clone()
        callback["options"].setdefault("task_id", new_task_id())
        if not self.header.tasks:
            return callback.apply_async(([],), client=client)
        chord_id = new_task_id()
        header = _publish_group(self.header.tasks, args, kwargs, queue, client, chord_id, callback)
        return AsyncResult(callback["options"]["task_id"], header._client, parent=header)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)
