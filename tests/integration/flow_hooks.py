"""
Receivers of :py:mod:`twistedq.hooks` for ``tests/integration/test_flow.py``:
each writes a line ``<process> <signal> <sender> <detail>`` to the file
named by ``$TWISTEDQ_TEST_HOOKS_FILE``; one raises, to show that a
receiver's error changes nothing.
"""

from __future__ import annotations

import os
from typing import Any

from twistedq import hooks


def _write(where: str, signal: Any, sender: Any, detail: Any = "") -> None:
    name = getattr(sender, "name", sender)
    with open(os.environ["TWISTEDQ_TEST_HOOKS_FILE"], "a") as f:
        f.write(f"{where} {signal.name} {name} {detail}\n")


for _name in ("flow.hooked", "flow.fails"):

    @hooks.task_prerun.connect(sender=_name)
    def _prerun(sender: Any, signal: Any, task_id: str, **rest: Any) -> None:
        _write("child", signal, sender, task_id)

    @hooks.task_success.connect(sender=_name)
    def _success(sender: Any, signal: Any, result: Any, **rest: Any) -> None:
        _write("child", signal, sender, result)

    @hooks.task_failure.connect(sender=_name)
    def _failure(sender: Any, signal: Any, exception: BaseException, **rest: Any) -> None:
        _write("child", signal, sender, type(exception).__name__)

    @hooks.task_postrun.connect(sender=_name)
    def _postrun(sender: Any, signal: Any, state: str, **rest: Any) -> None:
        _write("child", signal, sender, state)

    @hooks.task_received.connect(sender=_name)
    def _received(sender: Any, signal: Any, task_id: str, **rest: Any) -> None:
        _write("daemon", signal, sender, task_id)


@hooks.task_prerun.connect(sender="flow.hooked")
def _broken(**rest: Any) -> None:
    raise RuntimeError("a broken receiver")


@hooks.task_revoked.connect
def _revoked(sender: Any, signal: Any, expired: bool, **rest: Any) -> None:
    _write("daemon", signal, sender, f"expired={expired}")


@hooks.worker_process_init.connect
def _child_up(sender: Any, signal: Any, **rest: Any) -> None:
    _write("child", signal, "child")


@hooks.worker_ready.connect
def _ready(sender: Any, signal: Any, **rest: Any) -> None:
    _write("daemon", signal, "daemon")


@hooks.worker_shutting_down.connect
def _stopping(sender: Any, signal: Any, **rest: Any) -> None:
    _write("daemon", signal, "daemon")
