"""
The wire format of a task message: one immutable value, encoded and decoded
in this module only.

Version 1 is a JSON object::

    {"v": 1, "id": "<uuid4>", "task": "<name>", "args": [], "kwargs": {},
     "taskset": null, "eta": null, "expires": null, "retries": 0}

Optional fields, absent from a message that does not use them (a daemon
that does not know a field dead-letters the message as ``malformed``:
upgrade the daemons before the clients that send it):

- ``"ignore_result": true``: the daemon stores nothing for the task (no
  claim, no outcome); it runs at least once rather than exactly once.
- ``"rate_limit": "10/s"`` (or ``/m``, ``/h``, or a number per second,
  a string or a JSON number, from one a day to 1000000/s: the rule of
  :py:mod:`twistedq.rates`): the daemon starts tasks of this name at most
  that often, unless it sets a limit of its own for them
  (``--rate-limit``); see :py:mod:`twistedq.ratelimit`.

Anything else is refused with a :py:obj:`MessageError` that says why, and
whose :py:attr:`~MessageError.reason` is a short code for the dead-letter
queue.  The client and the daemon import this same module.

Workflows (:py:mod:`twistedq.canvas`) add four optional fields, each
absent when empty, so a message without them is exactly the one above:

- ``"links"``: signatures published when the task succeeds, its result
  prepended to their arguments (unless immutable);
- ``"errlinks"``: signatures published when it fails, its task id
  prepended (unless immutable);
- ``"chain"``: the steps of a chain still to run, in order: the first is
  published on success with the result prepended and carries the rest;
- ``"chord"``: the callback of the chord whose header this task is one
  member of (``"taskset"`` is then the chord's id, counting the members).

A signature is ``{"task": name, "args": [...], "kwargs": {...},
"options": {...}, "immutable": false}`` (only ``"task"`` is required);
its options are ``"task_id"`` (a UUID), ``"queue"``, ``"countdown"``
(seconds, from when it is published) and its own ``"links"`` and
``"errlinks"``, nested at most :py:data:`MAX_SIGNATURE_DEPTH` deep.  A
daemon that predates these fields dead-letters a message that holds them
(``unknown fields``): upgrade the daemons before the clients that send
workflows.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from twistedq.rates import parse_rate

__all__ = [
    "CONTENT_TYPE",
    "MALFORMED",
    "MAX_BODY_SIZE",
    "MAX_CHAIN",
    "MAX_LINKS",
    "MAX_QUEUE_NAME",
    "MAX_SIGNATURE_DEPTH",
    "MAX_TASK_NAME",
    "NOT_JSON",
    "TOO_LARGE",
    "MessageError",
    "TaskMessage",
    "check_queue_name",
    "check_signature",
    "is_task_id",
    "is_task_name",
    "loads_json",
    "new_task_id",
    "peek_task",
    "queue_name_error",
]

CONTENT_TYPE = "application/json"
VERSION = 1
#: Default upper bound on an encoded message, in bytes.
MAX_BODY_SIZE = 16 * 1024 * 1024
#: The longest task name, in characters.
MAX_TASK_NAME = 256
# The Unicode categories a task name may not hold: control, format
# (bidirectional overrides, zero-width characters) and lone surrogates.
_NOT_IN_NAMES = frozenset(("Cc", "Cf", "Cs"))

#: Reason of a body that is not UTF-8 JSON text.
NOT_JSON = "not-json"
#: Reason of JSON that is not a valid version 1 task message.
MALFORMED = "malformed"
#: Reason of a body over the size limit.
TOO_LARGE = "too-large"

# The encoder of message bodies (json.dumps would make one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

# A task id: a UUID in canonical lower-case text form.
_TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# The head of a body as TaskMessage.encode writes it.
_HEAD = re.compile(rb'\{"v":1,"id":"([0-9a-f-]{36})","task":"((?:[^"\\]|\\.){1,200})",')

_FIELDS = frozenset(
    (
        "v", "id", "task", "args", "kwargs", "taskset", "eta", "expires", "retries",
        "ignore_result", "links", "errlinks", "chain", "chord", "rate_limit",
    )
)  # fmt: skip
#: The optional fields of workflows; a message holds them only when not empty.
_CANVAS_FIELDS = frozenset(("links", "errlinks", "chain", "chord"))
_SIGNATURE_KEYS = frozenset(("task", "args", "kwargs", "options", "immutable"))
_OPTION_KEYS = frozenset(("task_id", "queue", "countdown", "links", "errlinks"))
#: The most signatures in one ``links`` or ``errlinks`` list.
MAX_LINKS = 100
#: The most steps in a ``chain``.
MAX_CHAIN = 1000
#: How deep signatures may nest through their own links.
MAX_SIGNATURE_DEPTH = 8
#: The longest suffix the daemon appends to a queue's name: that of its
#: longest delay queue, ``.delay.<2 ** 20>``
#: (:py:data:`twistedq.amqp.broker.DELAY_EXPONENT_MAX`); ``.dead`` is shorter.
QUEUE_SUFFIX = len(f".delay.{2**20}")
#: The longest queue name, in UTF-8 bytes: with :py:data:`QUEUE_SUFFIX`
#: it fits an AMQP short string (255 bytes).
MAX_QUEUE_NAME = 255 - QUEUE_SUFFIX
#: The prefix of queue names the broker reserves for itself.
RESERVED_QUEUE_PREFIX = "amq."


class MessageError(ValueError):
    """
    A message body could not be decoded or broke a rule of the format.  The
    message of the exception says which.

    :ivar reason: :py:data:`NOT_JSON`, :py:data:`MALFORMED` or
        :py:data:`TOO_LARGE`.
    :ivar task_id: the message's task id when it could be read, else
        :py:obj:`None`.
    :ivar task: the message's task name when it could be read, else
        :py:obj:`None`.
    """

    def __init__(
        self,
        text: str,
        reason: str = MALFORMED,
        task_id: str | None = None,
        task: str | None = None,
    ) -> None:
        super().__init__(text)
        self.reason = reason
        self.task_id = task_id
        self.task = task


def _short(value: Any) -> str:
    """
    The repr of a value, cut to 100 characters for an error message.
    """
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"number {text[:30]} is out of range")
    return number


def loads_json(text: str) -> Any:
    """
    Parse JSON text as a daemon reads a message: ``NaN``, ``Infinity``
    and numbers out of a float's range are refused.

    :raises ValueError: it is not such JSON.
    :raises RecursionError: it is nested too deeply to parse.
    """
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def is_task_name(name: object) -> TypeGuard[str]:
    """
    Whether ``name`` can name a task: a string of 1 to
    :py:data:`MAX_TASK_NAME` characters without control or format
    characters (bidirectional overrides, zero-width ones) or lone
    surrogates: it goes into logs, keys and headers as it is.
    """
    if not isinstance(name, str) or not 0 < len(name) <= MAX_TASK_NAME:
        return False
    if name.isascii():
        # The only ASCII characters of those categories are the controls
        # (Cc), exactly the ASCII characters str.isprintable() refuses.
        return name.isprintable()
    return not any(unicodedata.category(c) in _NOT_IN_NAMES for c in name)


def peek_task(body: bytes) -> tuple[str, str] | None:
    """
    The task id and name of a body without decoding it (one too large to
    decode, say), when it starts as :py:meth:`TaskMessage.encode` writes
    it; else :py:obj:`None`.  Nothing else of the body is checked.
    """
    match = _HEAD.match(body, 0, 300)
    if match is None:
        return None
    task_id = match.group(1).decode("ascii")
    if not is_task_id(task_id):
        return None
    try:
        name = json.loads(b'"' + match.group(2) + b'"')
    except ValueError:
        return None
    return task_id, name


def new_task_id() -> str:
    """
    Return a fresh task id: a random UUID4 in its canonical text form.
    """
    return str(uuid.uuid4())


def is_task_id(text: str) -> bool:
    """
    Tell whether ``text`` is a UUID in canonical lower-case text form, the only
    form task ids take.
    """
    # The canonical form is exactly what str(uuid.UUID(text)) gives back.
    return _TASK_ID.fullmatch(text) is not None


def queue_name_error(name: object) -> str | None:
    """
    Why ``name`` cannot name a task queue, or :py:obj:`None` when it can:
    it must be a non-empty string of at most :py:data:`MAX_QUEUE_NAME`
    UTF-8 bytes (the queues the daemon declares for it, ``<name>.dead``
    and ``<name>.delay.<seconds>``, must fit AMQP's 255 bytes), not in the
    broker's reserved prefix :py:data:`RESERVED_QUEUE_PREFIX`.
    """
    if not isinstance(name, str) or not name:
        return f"queue {_short(name)} is not a queue name"
    size = len(name.encode("utf-8", "replace"))
    if size > MAX_QUEUE_NAME:
        return (
            f"queue {_short(name)} is not a queue name: {size} bytes, longer than "
            f"{MAX_QUEUE_NAME} (its delay queues add up to {QUEUE_SUFFIX})"
        )
    if name.startswith(RESERVED_QUEUE_PREFIX):
        return (
            f"queue {_short(name)} is not a queue name: the broker reserves the prefix "
            f"{RESERVED_QUEUE_PREFIX!r}"
        )
    return None


def check_queue_name(name: object, task_id: str | None = None, task: str | None = None) -> None:
    """
    Refuse a queue name :py:func:`queue_name_error` finds fault with.

    :raises MessageError: the name cannot be a task queue's
        (:py:data:`MALFORMED`), carrying ``task_id`` and ``task``.
    """
    error = queue_name_error(name)
    if error is not None:
        raise MessageError(error, MALFORMED, task_id, task)


def _signature_error(where: str, text: str) -> MessageError:
    return MessageError(f"{where}: {text}")


def check_signature(document: Any, where: str = "signature", depth: int = 1) -> None:
    """
    Refuse a signature document (see the module's docstring) that breaks a
    rule: unknown keys or options, a task name, arguments, task id, queue
    or countdown that is not valid, too many links, or links nested more
    than :py:data:`MAX_SIGNATURE_DEPTH` deep.

    :param where: names the signature in the error's text.
    :raises MessageError: it breaks a rule; the text says which.
    """
    if depth > MAX_SIGNATURE_DEPTH:
        raise _signature_error(where, f"signatures nested over {MAX_SIGNATURE_DEPTH} deep")
    if not isinstance(document, dict):
        raise _signature_error(where, "is not a JSON object")
    unknown = document.keys() - _SIGNATURE_KEYS
    if unknown:
        raise _signature_error(where, f"unknown keys {sorted(map(str, unknown))}")
    if not is_task_name(document.get("task")):
        raise _signature_error(where, f"task name {_short(document.get('task'))} is not valid")
    if not isinstance(document.get("args", []), list):
        raise _signature_error(where, "args is not a JSON array")
    kwargs = document.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        raise _signature_error(where, "kwargs is not a JSON object")
    if not isinstance(document.get("immutable", False), bool):
        raise _signature_error(where, "immutable is not true or false")
    options = document.get("options", {})
    if not isinstance(options, dict):
        raise _signature_error(where, "options is not a JSON object")
    _check_options(options, where, depth)


def _check_options(options: dict[str, Any], where: str, depth: int) -> None:
    unknown = options.keys() - _OPTION_KEYS
    if unknown:
        raise _signature_error(where, f"unknown options {sorted(map(str, unknown))}")
    task_id = options.get("task_id")
    if task_id is not None and not (isinstance(task_id, str) and is_task_id(task_id)):
        raise _signature_error(where, f"task_id {_short(task_id)} is not a UUID")
    queue = options.get("queue")
    if queue is not None:
        error = queue_name_error(queue)
        if error is not None:
            raise _signature_error(where, error)
    countdown = options.get("countdown")
    if countdown is not None and (
        isinstance(countdown, bool)
        or not isinstance(countdown, (int, float))
        or not 0 <= countdown < 10**9
    ):
        raise _signature_error(where, f"countdown {_short(countdown)} is not a number of seconds")
    for key in ("links", "errlinks"):
        if key in options:
            _check_signatures(options[key], f"{where}.{key}", MAX_LINKS, depth + 1)


def _check_signatures(value: Any, where: str, most: int, depth: int = 1) -> None:
    if not isinstance(value, list):
        raise _signature_error(where, "is not a JSON array")
    if len(value) > most:
        raise _signature_error(where, f"has {len(value)} signatures, over the limit of {most}")
    for index, document in enumerate(value):
        check_signature(document, f"{where}[{index}]", depth)


def _check_canvas(document: dict[str, Any]) -> None:
    """
    Refuse the workflow fields of a message document that break a rule.
    """
    for key, most in (("links", MAX_LINKS), ("errlinks", MAX_LINKS), ("chain", MAX_CHAIN)):
        if key in document:
            _check_signatures(document[key], key, most)
    if "chord" in document:
        check_signature(document["chord"], "chord")
        if not isinstance(document.get("taskset"), str) or not is_task_id(document["taskset"]):
            raise MessageError("chord: a chord member's taskset must be the chord's id")


def _check_times(document: dict[str, Any]) -> None:
    """
    Refuse a message whose ``taskset``, ``eta`` or ``expires`` is neither
    a string nor null, or whose times are not ISO 8601.
    """
    for key in ("taskset", "eta", "expires"):
        value = document.get(key)
        if value is not None and not isinstance(value, str):
            raise MessageError(f"{key} is not a string or null")
    for key in ("eta", "expires"):
        value = document.get(key)
        if value is not None:
            try:
                datetime.datetime.fromisoformat(value)
            except ValueError:
                raise MessageError(f"{key} {value!r} is not an ISO 8601 time") from None


def _check_rate(rate_limit: Any) -> None:
    """
    Refuse a ``rate_limit`` that is not a rate (:py:func:`parse_rate`).
    """
    try:
        parse_rate(rate_limit)
    except ValueError as e:
        raise MessageError(f"rate_limit: {e}") from None


@dataclass(frozen=True)
class TaskMessage:
    """
    One request to run a task.

    :ivar id: the task id, a UUID4 string, used to find the result.
    :ivar task: the registered name of the task.
    :ivar args: positional arguments, JSON values.
    :ivar kwargs: keyword arguments, JSON values.
    :ivar taskset: the id of the taskset this task belongs to, if any.
    :ivar eta: ISO 8601 time before which the task must not run, if any.
    :ivar expires: ISO 8601 time after which the task must not run, if any.
    :ivar retries: how many times the task was retried before.
    :ivar ignore_result: store nothing for this task (encoded only when
        true).
    :ivar links: signature documents published when the task succeeds.
    :ivar errlinks: signature documents published when it fails.
    :ivar chain: the steps of its chain still to run, in order.
    :ivar chord: the callback of the chord it is a member of, or None.
    :ivar rate_limit: the most starts of tasks of this name (``"10/s"``,
        ``"5/m"``, ``"100/h"``, or a number per second), or None (encoded
        only when set).
    """

    id: str
    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    taskset: str | None = None
    eta: str | None = None
    expires: str | None = None
    retries: int = 0
    ignore_result: bool = False
    links: tuple[dict[str, Any], ...] = ()
    errlinks: tuple[dict[str, Any], ...] = ()
    chain: tuple[dict[str, Any], ...] = ()
    chord: dict[str, Any] | None = None
    rate_limit: str | float | None = None

    @property
    def has_followups(self) -> bool:
        """
        Whether the message holds any workflow field: what the daemon does
        after storing its outcome is then more than an ack.
        """
        return bool(self.links or self.errlinks or self.chain) or self.chord is not None

    def check(self) -> None:
        """
        Refuse a message the daemon would dead-letter (:py:meth:`decode`'s
        rules), or whose arguments JSON would not carry as they are:
        ``args`` must be a list or tuple (a string would run as one
        argument per character) and keyword argument names strings (JSON
        would turn ``1`` into ``"1"``, and ``{1: 'a', '1': 'b'}`` would
        lose a value).  Names inside argument values are not checked.

        :raises MessageError: the message breaks one of these rules; it
            carries the task id and name when they are valid.
        """
        self._checked_document()

    def _refusal(self, text: str) -> MessageError:
        """
        A ``malformed`` refusal of this message, carrying its task id and
        name when they are valid.
        """
        valid_id = self.id if isinstance(self.id, str) and is_task_id(self.id) else None
        name = self.task if is_task_name(self.task) else None
        return MessageError(text, MALFORMED, valid_id, name)

    def _checked_document(self) -> dict[str, Any]:
        """
        The JSON document of this message, once it passed every rule of
        :py:meth:`check`: each message is validated once on its way to
        the broker.
        """
        if not isinstance(self.args, (tuple, list)):
            raise self._refusal(
                f"args must be a list or tuple, not {type(self.args).__name__}: {_short(self.args)}"
            )
        if not isinstance(self.kwargs, dict):
            raise self._refusal(f"kwargs must be a dict, not {type(self.kwargs).__name__}")
        odd = [key for key in self.kwargs if not isinstance(key, str)]
        if odd:
            raise self._refusal(f"keyword argument names must be strings, not {_short(odd)}")
        document = self._document()
        self._checked_fields(document)
        return document

    def _document(self) -> dict[str, Any]:
        document = {
            "v": VERSION,
            "id": self.id,
            "task": self.task,
            "args": list(self.args),
            "kwargs": self.kwargs,
            "taskset": self.taskset,
            "eta": self.eta,
            "expires": self.expires,
            "retries": self.retries,
        }
        if self.ignore_result:
            document["ignore_result"] = True
        if self.rate_limit is not None:
            document["rate_limit"] = self.rate_limit
        if self.links or self.errlinks or self.chain or self.chord is not None:
            for key in ("links", "errlinks", "chain"):
                if getattr(self, key):
                    document[key] = list(getattr(self, key))
            if self.chord is not None:
                document["chord"] = self.chord
        return document

    def encode(self) -> bytes:
        """
        Encode this message as the UTF-8 JSON body of an AMQP message.

        :raises MessageError: the message breaks a rule of :py:meth:`check`,
            or an argument is not a JSON value.
        """
        document = self._checked_document()
        try:
            text = _ENCODER.encode(document)
        except (TypeError, ValueError) as e:
            raise MessageError(
                f"arguments of task {self.task!r} are not JSON values: {e}"
            ) from None
        return text.encode("utf-8")

    @classmethod
    def decode(cls, body: bytes, max_size: int = MAX_BODY_SIZE) -> TaskMessage:
        """
        Decode and validate a message body.

        :raises MessageError: the body is not a valid version 1 message; the
            exception's text says what is wrong.
        """
        if not isinstance(body, bytes):
            raise MessageError(f"body must be bytes, not {type(body).__name__}")
        if len(body) > max_size:
            task_id, name = peek_task(body) or (None, None)
            raise MessageError(
                f"body of {len(body)} bytes is over the limit of {max_size}",
                TOO_LARGE,
                task_id,
                name,
            )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise MessageError("body is not UTF-8 text", NOT_JSON) from None
        try:
            document = loads_json(text)
        except ValueError as e:
            raise MessageError(f"body is not JSON: {e}", NOT_JSON) from None
        except RecursionError:
            task_id, name = peek_task(body) or (None, None)
            raise MessageError("body is JSON nested too deeply", MALFORMED, task_id, name) from None
        return cls.from_document(document)

    @classmethod
    def from_document(cls, document: Any) -> TaskMessage:
        """
        Validate an already parsed JSON document and build the message.

        :raises MessageError: the document is not a valid version 1 message;
            it carries the task id and name when they are valid.
        """
        return cls(**cls._checked_fields(document))

    @classmethod
    def _checked_fields(cls, document: Any) -> dict[str, Any]:
        """
        The fields of the message a document holds, once valid.

        :raises MessageError: as :py:meth:`from_document`.
        """
        try:
            return cls._fields(document)
        except MessageError as e:
            if isinstance(document, dict):
                task_id, name = document.get("id"), document.get("task")
                if isinstance(task_id, str) and is_task_id(task_id):
                    e.task_id = task_id
                if is_task_name(name):
                    e.task = name
            raise

    @classmethod
    def _fields(cls, document: Any) -> dict[str, Any]:
        if not isinstance(document, dict):
            raise MessageError("body is not a JSON object")
        version = document.get("v")
        if type(version) is not int or version != VERSION:
            raise MessageError(f"unsupported message version {version!r}")
        unknown = document.keys() - _FIELDS
        if unknown:
            raise MessageError(f"unknown fields {sorted(unknown)}")
        task_id = document.get("id")
        if not isinstance(task_id, str) or not is_task_id(task_id):
            raise MessageError(f"id {task_id!r} is not a UUID")
        name = document.get("task")
        if not is_task_name(name):
            raise MessageError(
                f"task name {_short(name)} is not a string of 1 to {MAX_TASK_NAME} characters "
                "without control or format characters"
            )
        args = document.get("args", [])
        if not isinstance(args, list):
            raise MessageError("args is not a JSON array")
        kwargs = document.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise MessageError("kwargs is not a JSON object")
        _check_times(document)
        retries = document.get("retries", 0)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise MessageError("retries is not a non-negative integer")
        ignore_result = document.get("ignore_result", False)
        if not isinstance(ignore_result, bool):
            raise MessageError("ignore_result is not true or false")
        rate_limit = document.get("rate_limit")
        if rate_limit is not None:
            _check_rate(rate_limit)
        canvas: dict[str, Any] = {}
        if not _CANVAS_FIELDS.isdisjoint(document):
            _check_canvas(document)
            canvas = {key: document[key] for key in _CANVAS_FIELDS if key in document}
            for key in ("links", "errlinks", "chain"):
                if key in canvas:
                    canvas[key] = tuple(canvas[key])
        return dict(
            id=task_id,
            task=name,
            args=tuple(args),
            kwargs=kwargs,
            taskset=document.get("taskset"),
            eta=document.get("eta"),
            expires=document.get("expires"),
            retries=retries,
            ignore_result=ignore_result,
            rate_limit=rate_limit,
            **canvas,
        )
