"""
The processes a benchmark starts: their memory, their CPU time, waiting
for them to be ready and stopping them.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path


def rss_mib(pid: int) -> float:
    """
    Resident memory of a process and all its descendants, in MiB.
    """
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:
            continue
        pids.extend(int(child) for child in children)
    return total / 1024


def cpu_seconds(pid: int) -> tuple[float, float]:
    """
    CPU time (user and system) used so far by a process and, apart, by its
    living descendants, in seconds.
    """
    tick = os.sysconf("SC_CLK_TCK")

    def own(process: int) -> float:
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    children = 0.0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            if current != pid:
                children += own(current)
            found = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:
            continue
        pids.extend(int(child) for child in found)
    return own(pid), children


def listener_pid(port: int) -> int | None:
    """
    The process listening on TCP ``port`` of this machine (IPv4 or IPv6),
    or None: none, or not ours to see.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except (FileNotFoundError, PermissionError, NotADirectoryError):
            continue
    return None


def percentiles(samples: list[float]) -> dict[str, float]:
    """
    The 50th, 90th and 99th percentiles of ``samples``.
    """
    ordered = sorted(samples)
    quantiles = statistics.quantiles(ordered, n=100)
    return {"p50": quantiles[49], "p90": quantiles[89], "p99": quantiles[98]}


def wait_for_log(path: Path, process: subprocess.Popen[bytes], needles: list[str]) -> None:
    """
    Return once the log at ``path`` holds every one of ``needles``; exit
    with the log's end if the process dies or a minute passes first.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if all(needle in text for needle in needles):
            return
        if process.poll() is not None:
            sys.exit(f"worker exited with {process.returncode}:\n{text[-3000:]}")
        time.sleep(0.05)
    sys.exit(f"worker not ready:\n{path.read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen[bytes], wait: float = 60) -> None:
    """
    Stop a worker with SIGTERM, killing it (and its children) after
    ``wait`` seconds.
    """
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(wait)
    except subprocess.TimeoutExpired:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        found = children.read_text().split() if children.exists() else []
        process.kill()
        for child in found:
            try:
                os.kill(int(child), signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()
