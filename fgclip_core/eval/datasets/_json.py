"""JSON / JSONL loading with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fgclip_core.eval import io
from fgclip_core.eval.datasets.errors import BenchmarkFormatError


def read_source(url: str) -> str:
    try:
        return io.read_text(url)
    except FileNotFoundError as e:
        raise BenchmarkFormatError(url, None, "file not found") from e
    except IsADirectoryError as e:
        raise BenchmarkFormatError(url, None, "is a directory, expected a file") from e
    except UnicodeDecodeError as e:
        raise BenchmarkFormatError(url, None, f"not UTF-8 text: {e}") from e


def load_json(url: str) -> Any:
    text = read_source(url)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchmarkFormatError(url, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from e


def iter_jsonl(url: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, object)`` for every non-blank line."""
    for lineno, line in enumerate(read_source(url).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BenchmarkFormatError(url, lineno, f"invalid JSON: {e.msg} (column {e.colno})") from e
        if not isinstance(obj, dict):
            raise BenchmarkFormatError(url, lineno, f"expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], source: str, where: str | int) -> Any:
    if key not in obj:
        raise BenchmarkFormatError(source, where, f"missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BenchmarkFormatError(source, where, f"field {key!r} must be {names}, got {type(value).__name__}")
    return value


def bbox_xywh(value: Any, source: str, where: str | int, key: str = "bbox") -> tuple[float, float, float, float]:
    if (not isinstance(value, list) or len(value) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise BenchmarkFormatError(source, where, f"field {key!r} must be [x, y, w, h] numbers, got {value!r}")
    x, y, w, h = (float(v) for v in value)
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise BenchmarkFormatError(source, where, f"field {key!r} has an empty or negative box {value!r}")
    return x, y, w, h
