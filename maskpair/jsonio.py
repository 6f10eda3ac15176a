"""The one JSON writer: every JSON file and line the project writes goes through `dumps` / `write_json`, which
turn numpy scalars and arrays, tuples, paths and non-finite floats into JSON's own types.

numpy's scalars are not Python's: `np.float64(1) > 0.5` is a `numpy.bool_`, which `json.dumps` refuses ("Object of
type bool is not JSON serializable") exactly when a finding is made; so nothing is written any other way.
"""
from __future__ import annotations

import json
import math
from pathlib import Path, PurePath

import numpy as np

from maskpair.atomic import write_atomically


def plain(value):
    """`value` with every numpy scalar and array, tuple, set and path made a JSON type; NaN and infinities
    become None (null), which every JSON reader accepts."""
    if isinstance(value, dict):
        return {str(key) if not isinstance(key, str) else key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return [plain(item) for item in sorted(value)]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, PurePath):
        return str(value)
    return value


def dumps(value, indent: int | None = None) -> str:
    """JSON text of `value` (see `plain`); no NaN is ever written."""
    return json.dumps(plain(value), indent=indent, ensure_ascii=False, allow_nan=False)


def write_json(path, value, indent: int | None = 1) -> Path:
    """Write `value` as JSON to `path` (parent folders created) through a temporary file renamed over it, so a
    reader never sees half a file and a failure leaves the previous one. Returns the path."""
    text = dumps(value, indent) + "\n"  # before anything is opened: a value that cannot be written writes nothing
    return write_atomically(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
