"""
How the ``twistedq`` command prints: aligned tables, durations, one line
per event, JSON.
"""

from __future__ import annotations

import datetime
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "clock_time",
    "dumps",
    "duration",
    "event_line",
    "flatten",
    "printable",
    "table",
    "text",
]


#: How the usual control characters are escaped; any other is ``\\xNN``,
#: ``\\uNNNN`` or ``\\UNNNNNNNN``.
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

#: What JSON text may hold of control and format characters once
#: ``json.dumps`` escaped the first 32: DEL and beyond ASCII.
_NOT_ASCII = re.compile("[^\x00-\x7e]")


def _escaped(character: str) -> str:
    if character in _ESCAPES:
        return _ESCAPES[character]
    if character == " " or not unicodedata.category(character).startswith(("C", "Zl", "Zp")):
        return character
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(value: Any, fold: bool = False) -> str:
    """
    ``str(value)`` safe to print on a terminal: its control and format
    characters (escape sequences, newlines, bidirectional overrides, line
    separators) written as Python escapes, ``\\x1b``, ``\\n``,
    ``\\u202e``.  Every text the command prints that comes from the broker,
    the store or a daemon goes through it.

    :param fold: first fold each run of whitespace into one space (for
        text shown on one line).
    """
    string = str(value)
    if fold:
        string = " ".join(string.split())
    if string.isprintable():
        return string
    return "".join(_escaped(character) for character in string)


def text(value: Any) -> str:
    """
    A value as one table cell: ``-`` for nothing, whitespace folded,
    control characters escaped (:py:func:`printable`).
    """
    if value is None or value == "":
        return "-"
    return printable(value, fold=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "") -> list[str]:
    """
    Lines of an aligned table: the headers, then one line per row; the
    last column is not padded.
    """
    cells = [list(headers)] + [[text(cell) for cell in row] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    return [
        indent
        + "  ".join(
            cell if i == len(line) - 1 else cell.ljust(widths[i]) for i, cell in enumerate(line)
        ).rstrip()
        for line in cells
    ]


def duration(seconds: float | None) -> str:
    """
    A duration for a person: ``0.004s``, ``2.5s``, ``3m05s``, ``2h03m``,
    ``4d02h``; ``-`` when unknown.
    """
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 1:
        return f"{seconds:.3f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def clock_time(when: float | None) -> str:
    """
    A unix time as local ``HH:MM:SS.mmm``, or ``-``.
    """
    if when is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(float(when))
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def event_line(event: Mapping[str, Any]) -> str:
    """
    One event as a line: time, daemon, type, then for a task
    ``name[id]`` and what is known of its runtime, exception, reason,
    child and arguments; for a daemon its load.
    """
    parts = [clock_time(event.get("time")), text(event.get("daemon")), text(event.get("type"))]
    if event.get("id") is not None or str(event.get("type")).startswith("task."):
        if event.get("id") is not None:
            parts.append(f"{text(event.get('name') or '?')}[{text(event.get('id'))}]")
        elif event.get("name"):
            parts.append(text(event["name"]))
        if event.get("runtime") is not None:
            parts.append(duration(event["runtime"]))
        for key in ("exception", "reason"):
            if event.get(key):
                parts.append(f"{key}={text(event[key])}")
        if event.get("child"):
            parts.append(f"on {text(event['child'])}")
        if event.get("args"):
            parts.append(text(event["args"]))
    else:
        for key in ("children", "busy", "held", "processed"):
            if key in event:
                parts.append(f"{key}={text(event[key])}")
        if event.get("uptime") is not None:
            parts.append(f"up {duration(event['uptime'])}")
    return " ".join(parts)


def flatten(document: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """
    A nested JSON document as ``(dotted.key, value)`` pairs, in order;
    lists of scalars stay whole.
    """
    if isinstance(document, Mapping):
        pairs: list[tuple[str, Any]] = []
        for key, value in document.items():
            pairs.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        if not pairs and prefix:
            pairs.append((prefix, "{}"))
        return pairs
    if isinstance(document, list) and any(isinstance(v, (Mapping, list)) for v in document):
        pairs = []
        for i, value in enumerate(document):
            pairs.extend(flatten(value, f"{prefix}.{i}" if prefix else str(i)))
        return pairs
    if isinstance(document, list):
        return [(prefix, ", ".join(str(v) for v in document) or "[]")]
    return [(prefix, document)]


def _json_escape(match: re.Match[str]) -> str:
    character = match.group()
    if character.isprintable():
        return character
    code = ord(character)
    if code > 0xFFFF:  # a surrogate pair, as JSON writes it
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def dumps(document: Any, pretty: bool = True) -> str:
    """
    JSON text, indented unless ``pretty`` is false (one line).  Text
    stays as it is but for its control and format characters, escaped
    (``\\u001b``, ``\\u009b``, ``\\u202e``): JSON escapes the first 32,
    this the others.
    """
    if pretty:
        text = json.dumps(document, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    else:
        text = json.dumps(document, sort_keys=True, default=str, ensure_ascii=False)
    return _NOT_ASCII.sub(_json_escape, text)
