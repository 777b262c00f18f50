"""
What the stores can hold, checked before a write: the size of an outcome
document against the store's largest value, and ids that a key or a
column cannot take as they are.

A store refuses a document over its limit with
:py:class:`~twistedq.backends.base.StoreRefused` before anything is sent,
so the server never sees it (Redis would drop the connection, with the
other requests in flight on it) and the daemon does not copy it again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from twistedq.backends.base import StoreRefused

__all__ = ["check_sizes", "fitted_id", "too_large"]

MiB = 1024 * 1024


def too_large(task_id: str, size: int, most: int, url: str) -> StoreRefused:
    """
    The refusal of a document of ``size`` bytes by a store taking ``most``.
    """
    return StoreRefused(
        f"the outcome of task {task_id} is {size} bytes, more than the {most} bytes"
        f" {url} takes in one value",
        task_id,
    )


def check_sizes(documents: Iterable[tuple[str, bytes]], most: int | None, url: str) -> None:
    """
    Raise :py:class:`~twistedq.backends.base.StoreRefused` for the first
    ``(task id, document)`` larger than ``most`` bytes (no limit if None).
    """
    if most is None:
        return
    for task_id, document in documents:
        if len(document) > most:
            raise too_large(task_id, len(document), most, url)


def fitted_id(text: str, most: int, plain: re.Pattern[str]) -> str:
    """
    ``text`` itself if it matches ``plain`` and has at most ``most``
    characters, else a digest of it in that many characters: the same
    text always gives the same id, and two texts two ids (but by chance),
    so a taskset id a key or a column cannot take as it is (too long, a
    NUL, a lone surrogate, a space in a memcached key) still names one
    taskset.
    """
    if len(text) <= most and plain.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return ("#" + digest)[:most]
