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
  :py:class:`~twistedq.result.AsyncResult` made without a client use.  A
  process that never imported it (one that imports only
  :py:mod:`twistedq.result`) has it imported by name on first use, so no
  module below the client imports it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twistedq.client import Client

__all__ = [
    "CLIENT_MODULE",
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

#: The module that registers the default client's factory when imported.
CLIENT_MODULE = "twistedq.client"


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
    With no factory registered yet, :py:data:`CLIENT_MODULE` is imported
    first: importing it registers one.

    :raises LookupError: that module registered no factory.
    """
    global _client
    if _client_factory is None:
        # Outside the lock: the import registers the factory, which takes it.
        importlib.import_module(CLIENT_MODULE)
    with _client_lock:
        if _client is None:
            if _client_factory is None:
                raise LookupError(
                    f"no default client: importing {CLIENT_MODULE} registered no client "
                    "factory (set_client_factory); pass a client"
                )
            _client = _client_factory()
        return _client


def set_default_client(client: Client | None) -> None:
    """
    Replace the process-wide client (:py:obj:`None`: build it anew on next use).
    """
    global _client
    with _client_lock:
        _client = client
