"""
A task's arguments kept in its stored outcome, when
``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS`` asks for them: the outcome document
gains ``"task_args"`` (a JSON list) and ``"task_kwargs"`` (a JSON object),
each whole while its JSON text has at most the setting's number of
characters; a longer one is kept as a string instead, the first that many
characters of its JSON text followed by ``…``.  A reader tells the two
apart by type (:py:func:`stored_arguments`): only whole arguments can run
the task again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

#: The most characters of a task's arguments kept in its result when
#: ``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS`` is on without a size.
DEFAULT_ARGUMENTS_SIZE = 1024

__all__ = [
    "CUT_MARK",
    "DEFAULT_ARGUMENTS_SIZE",
    "arguments_text",
    "stored_arguments",
    "with_arguments",
]

#: What ends the text of arguments cut to the size kept.
CUT_MARK = "\u2026"


def _member(value: Any, size: int) -> str:
    """
    The JSON of ``value``, or of the string of its first ``size``
    characters and :py:data:`CUT_MARK` when it is longer.
    """
    text = json.dumps(value, separators=(",", ":"))
    if len(text) <= size:
        return text
    return json.dumps(text[:size] + CUT_MARK)


def with_arguments(
    document: bytes, args: Sequence[Any], kwargs: Mapping[str, Any], size: int
) -> bytes:
    """
    An encoded outcome document with the task's arguments added (the
    members are appended: a reader takes the last of a repeated key).

    :param document: the outcome, a JSON object as
        :py:mod:`twistedq.outcome` encodes it.
    :param size: the most characters of each one's JSON text kept whole.
    """
    members = f',"task_args":{_member(list(args), size)},"task_kwargs":{_member(kwargs, size)}}}'
    return document.rstrip()[:-1] + members.encode("ascii")


def arguments_text(value: Any) -> str:
    """
    The text the Django store keeps of a ``task_args`` or ``task_kwargs``
    member: the JSON text of whole arguments, the cut text itself, or
    ``""`` when absent.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "))


def stored_arguments(args_text: str, kwargs_text: str) -> tuple[list[Any], dict[str, Any]]:
    """
    The arguments of a task from the texts :py:func:`arguments_text` kept.

    :raises ValueError: they were not kept (empty), or were cut; the
        message says which.
    """
    if not args_text and not kwargs_text:
        raise ValueError(
            "its arguments were not stored (set TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS to keep them)"
        )
    try:
        args, kwargs = json.loads(args_text), json.loads(kwargs_text)
    except ValueError:
        args = kwargs = None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ValueError(
            "its arguments were cut to the size TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS keeps"
        )
    return args, kwargs
