"""Fast reading of a COCO results list: the 20-30 MB file a COCO-val evaluation hands over.

``json.loads`` builds a dict per detection (about 1 s for 250k detections on a small CPU,
more than the whole evaluation in hotcoco). A results file written by a program is
uniform: every object has the same keys, in the same order, holding only numbers or
lists of numbers. ``parse_uniform_list`` proves that, then lets numpy's C ``loadtxt`` read
all the numbers at once (one object per line). The proof, all in C-speed byte operations:

- the first object decodes with ``json`` and holds only numbers and lists of numbers;
- removing every character a number can contain leaves the same skeleton for every
  object (same keys, punctuation and spacing), and nothing outside them but ``[ , ]``;
- each key that itself contains such a character occurs exactly once per object.

Anything else (a string id, a missing key, ``null``, a nested object, a truncated file)
returns ``None`` and the caller uses ``json``; so this path reads exactly what ``json``
reads, and numbers come out bit-identical (both round correctly).
"""

from __future__ import annotations

import io
import json
import logging
from typing import Dict, List, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)

_NUMBER_CHARS = b"0123456789.-+eE"
_MAX_EXACT = 2.0**53  # larger integers do not survive float64; json keeps them exact


def _line_table() -> bytes:
    """Byte map: objects on their own lines, fields separated by commas, brackets gone."""
    table = bytearray(range(256))
    for src, dst in (
        (b"\n", b" "),
        (b"\r", b" "),
        (b"\t", b" "),
        (b"{", b"\n"),
        (b":", b","),
        (b"[", b" "),
        (b"]", b" "),
        (b"}", b" "),
    ):
        table[src[0]] = dst[0]
    return bytes(table)


_LINE_TABLE = _line_table()


def _layout(first: object) -> Optional[List[Tuple[str, int, int]]]:
    """``(key, first column, width)`` per key of the first object, if all values are numeric."""
    if not isinstance(first, dict) or not first:
        return None
    layout = []
    column = 0
    for key, value in first.items():
        column += 1  # the key itself occupies a column
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            width = 1
        elif (
            isinstance(value, list)
            and value
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            width = len(value)
        else:
            return None
        layout.append((key, column, width))
        column += width
    return layout


def parse_uniform_list(data: bytes) -> Optional[Dict[str, np.ndarray]]:
    """Columns of a uniform JSON list of flat numeric objects, or ``None`` (use ``json``).

    A key holding a number gives an (N,) array, a key holding a list of L numbers an (N, L)
    array; all float64.
    """
    start = data.find(b"{")
    if start < 0 or data[:start].strip() != b"[" or b"+" in data:
        return None  # not a list of objects, or exponent spellings we leave to json
    end = data.find(b"}", start)
    if end < 0:
        return None
    try:
        first = json.loads(data[start : end + 1])
    except ValueError:
        return None
    layout = _layout(first)
    if layout is None:
        return None
    skeleton = data.translate(None, _NUMBER_CHARS)
    s_start = skeleton.find(b"{")
    s_end = skeleton.find(b"}", s_start) + 1
    obj = skeleton[s_start:s_end]
    # The separator between objects: whatever lies between the first "}" and the next "{".
    nxt = skeleton.find(b"{", s_end) - s_end
    sep = skeleton[s_end : s_end + nxt] if nxt >= 0 else b""
    if nxt >= 0 and sep.strip() != b",":
        return None
    # Object count from the length up to the last "}"; the comparison below proves it.
    body_len = skeleton.rfind(b"}") + 1 - s_start
    count, rest = divmod(body_len + len(sep), len(obj) + len(sep))
    if rest or count < 1 or skeleton[s_start + body_len :].strip() != b"]":
        return None
    if not skeleton.startswith((obj + sep) * (count - 1) + obj, s_start):  # startswith: no copy of the body
        return None
    for key, _, _ in layout:
        encoded = json.dumps(key).encode()
        if any(c in _NUMBER_CHARS for c in encoded) and data.count(encoded) != count:
            return None
    usecols = [c for _, column, width in layout for c in range(column, column + width)]
    # One object per line; the first line is what precedes the first "{" (the list's "[").
    lines = data.translate(_LINE_TABLE)
    try:
        values = np.loadtxt(
            io.BytesIO(lines),
            delimiter=",",
            usecols=usecols,
            dtype=np.float64,
            ndmin=2,
            comments=None,
            skiprows=1,
        )
    except ValueError:
        return None
    if values.shape != (count, len(usecols)) or (np.abs(values) >= _MAX_EXACT).any():
        return None
    columns: Dict[str, np.ndarray] = {}
    col = 0
    for key, _, width in layout:
        block = values[:, col : col + width]
        columns[key] = block[:, 0] if width == 1 and not isinstance(first[key], list) else block
        col += width
    return columns
