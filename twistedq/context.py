"""
What this process runs in: the pool child it is, if any, and its default
client.

Both are process-wide and both are read from below the modules that set
them, so they live here, in a module that imports none of twistedq:

- the child's entry point (:py:mod:`twistedq.worker.child`) names the child
  once, and :py:mod:`twistedq.result` refuses to wait for other tasks inside
  one;
- :py:mod:`twistedq.client` tells how to build the default client, which the
  module-level facades of :py:mod:`twistedq.task` and an
  :py:class:`~twistedq.result.AsyncResult` made without a client use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twistedq.client import Client

__all__ = [
    "current_child",
    "default_client",
    "set_client_factory",
    "set_current_child",
    "set_default_client",
]

#: The name of this pool child ("Process-1" ...), or None outside one.
_child: str | None = None

_client_lock = threading.Lock()
_client: Client | None = None
_client_factory: Callable[[], Client] | None = None


def current_child() -> str | None:
    """
    The name of the pool child this process is ("Process-1" ...), or
    :py:obj:`None` outside a child.
    """
    return _child


def set_current_child(name: str | None) -> None:
    """
    Mark this process as the pool child ``name`` (:py:obj:`None`: as no
    child).
    """
    global _child
    _child = name


def set_client_factory(factory: Callable[[], Client]) -> None:
    """
    How to build the default client on first use (the
    :py:class:`~twistedq.client.Client` class, configured from the
    environment).
    """
    global _client_factory
    with _client_lock:
        _client_factory = factory


def default_client() -> Client:
    """
    The process-wide client, configured from the environment on first use.

    :raises LookupError: nothing told how to build it
        (:py:mod:`twistedq.client` was never imported).
    """
    global _client
    with _client_lock:
        if _client is None:
            if _client_factory is None:
                raise LookupError("no default client: import twistedq.client, or pass a client")
            _client = _client_factory()
        return _client


def set_default_client(client: Client | None) -> None:
    """
    Replace the process-wide client (:py:obj:`None`: build it anew on next use).
    """
    global _client
    with _client_lock:
        _client = client
