"""
The wire format of a task message: one immutable value, encoded and decoded
in this module only.

Version 1 is a JSON object::

    {"v": 1, "id": "<uuid4>", "task": "<name>", "args": [], "kwargs": {},
     "taskset": null, "eta": null, "expires": null, "retries": 0}

Anything else is refused with a :py:obj:`MessageError` that says why.  The client
and the daemon import this same module.
"""

from __future__ import annotations

import datetime
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONTENT_TYPE",
    "MAX_BODY_SIZE",
    "MessageError",
    "TaskMessage",
    "is_task_id",
    "new_task_id",
]

CONTENT_TYPE = "application/json"
VERSION = 1
#: Default upper bound on an encoded message, in bytes.
MAX_BODY_SIZE = 16 * 1024 * 1024

_FIELDS = frozenset(("v", "id", "task", "args", "kwargs", "taskset", "eta", "expires", "retries"))


class MessageError(ValueError):
    """
    A message body could not be decoded or broke a rule of the format.  The
    message of the exception says which.
    """


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


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
    if len(text) != 36:
        return False
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


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
    """

    id: str
    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    taskset: str | None = None
    eta: str | None = None
    expires: str | None = None
    retries: int = 0

    def encode(self) -> bytes:
        """
        Encode this message as the UTF-8 JSON body of an AMQP message.

        :raises MessageError: an argument is not a JSON value.
        """
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
        try:
            text = json.dumps(document, separators=(",", ":"), allow_nan=False)
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
            raise MessageError(f"body of {len(body)} bytes is over the limit of {max_size}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise MessageError("body is not UTF-8 text") from None
        try:
            document = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as e:
            raise MessageError(f"body is not JSON: {e}") from None
        return cls.from_document(document)

    @classmethod
    def from_document(cls, document: Any) -> TaskMessage:
        """
        Validate an already parsed JSON document and build the message.

        :raises MessageError: the document is not a valid version 1 message.
        """
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
        if not isinstance(name, str) or not name:
            raise MessageError(f"task name {name!r} is not a non-empty string")
        args = document.get("args", [])
        if not isinstance(args, list):
            raise MessageError("args is not a JSON array")
        kwargs = document.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise MessageError("kwargs is not a JSON object")
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
        retries = document.get("retries", 0)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise MessageError("retries is not a non-negative integer")
        return cls(
            id=task_id,
            task=name,
            args=tuple(args),
            kwargs=kwargs,
            taskset=document.get("taskset"),
            eta=document.get("eta"),
            expires=document.get("expires"),
            retries=retries,
        )
