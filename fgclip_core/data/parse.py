"""Defensive JSON parsing of annotation files: one bad record never costs the others.

``parse_jsonl`` and ``parse_json_array`` yield ``Parsed(value, line, error, excerpt)`` per record, in
file order. A record that cannot be used gets ``error`` (a one-line reason) and an ``excerpt`` of
its source text instead of a value; the records around it parse on. Refused per record:

- not valid JSON, or not UTF-8 (a JSONL line; in an official JSON array, the element holding the
  stray bytes: the file is decoded with ``surrogateescape`` so the other elements still read);
- longer than ``ReadConfig.max_record_bytes``;
- nested deeper than ``ReadConfig.max_json_depth`` (``json`` itself raises ``RecursionError``
  near 1,000 levels; anything below that but above the limit is refused here, before any code
  walks it recursively);
- integers with more digits than Python converts (``ValueError`` from ``json``);
- strings that cannot be written as UTF-8 (a lone surrogate escape such as ``"\\ud800"``).

In an array, after an element that does not parse, the next one is found by matching brackets
outside strings; only when that fails (a truncated file) is the rest of the file one entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')   # whole strings (skipped), brackets, commas
_SURROGATE_CHAR = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
EXCERPT = 2000


@dataclass
class Parsed:
    value: Any                 # the parsed record (None when ``error`` is set)
    line: int                  # 1-based line the record starts on
    error: str | None = None
    excerpt: str = ""          # the start of the source text, when ``error`` is set


def _safe_text(text: str) -> str:
    """``text`` with undecodable bytes (``surrogateescape``) shown as U+FFFD, writable as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _deeper_than(value: Any, limit: int) -> bool:
    """True when ``value`` nests arrays/objects more than ``limit`` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return True
        children = v.values() if isinstance(v, dict) else v
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return False


def check_value(value: Any, source: str, start: int, end: int, max_depth: int) -> str | None:
    """Reasons a parsed record (from ``source[start:end]``) is unusable, or None. The costly checks
    run only when the cheap ones (bracket count, escape search) say they could fail."""
    if isinstance(value, (dict, list)) and source.count("[", start, end) + source.count("{", start, end) > max_depth \
            and _deeper_than(value, max_depth):
        return f"nested deeper than {max_depth} levels (read.max_json_depth)"
    if _SURROGATE_ESCAPE.search(source, start, end):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return "holds a lone surrogate escape (e.g. \\ud800): not writable as UTF-8"
    return None


def _loads(text: str, max_depth: int) -> tuple[Any, str | None]:
    try:
        value = json.loads(text)
    except RecursionError:
        return None, "nested too deep to parse"
    except ValueError as e:   # JSONDecodeError, and int digits beyond Python's conversion limit
        return None, f"not JSON: {e}"
    return value, check_value(value, text, 0, len(text), max_depth)


def parse_jsonl(data: bytes, max_bytes: int, max_depth: int) -> Iterator[Parsed]:
    """One record per non-blank line (split on ``\\n`` only: strings may hold U+2028)."""
    for lineno, raw_line in enumerate(data.split(b"\n"), start=1):
        if not raw_line.strip():
            continue
        if len(raw_line) > max_bytes:
            yield Parsed(None, lineno, f"line is {len(raw_line)} bytes > read.max_record_bytes {max_bytes}",
                         raw_line[:EXCERPT].decode("utf-8", "replace"))
            continue
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield Parsed(None, lineno, f"line is not UTF-8 at byte {e.start}: {e.reason}",
                         raw_line[:EXCERPT].decode("utf-8", "replace"))
            continue
        value, error = _loads(text, max_depth)
        yield Parsed(value, lineno, error, text[:EXCERPT] if error else "")


def _element_end(text: str, start: int) -> int | None:
    """End of the array element starting at ``start`` (brackets matched outside strings), or None."""
    depth = 0
    for m in _TOKEN.finditer(text, start):
        c = m.group()[0]
        if c == '"':
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            if depth == 0:
                return m.start()
            depth -= 1
            if depth == 0:
                return m.end()
        elif depth == 0:   # ','
            return m.start()
    return None


def parse_json_array(data: bytes, max_bytes: int, max_depth: int) -> Iterator[Parsed]:
    """The elements of one JSON array (memory: the text plus one record), each with its line."""
    text = data.decode("utf-8", "surrogateescape")
    del data
    has_bad_bytes = _SURROGATE_CHAR.search(text) is not None
    pos = _WS.match(text, 0).end() + 1   # type: ignore[union-attr]  # after "["
    line = 1 + text.count("\n", 0, pos)
    first = True
    while True:
        start = _WS.match(text, pos).end()   # type: ignore[union-attr]
        line += text.count("\n", pos, start)
        if first and text.startswith("]", start):
            return
        first = False
        error = None
        try:
            value, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError) as e:
            value, found = None, _element_end(text, start)
            if found is None or found <= start:
                yield Parsed(None, line, f"not valid JSON from here on (the rest of the file is lost): {e}",
                             _safe_text(text[start:start + EXCERPT]))
                return
            end = found
            error = "nested too deep to parse" if isinstance(e, RecursionError) else f"not JSON: {e}"
        if error is None and end - start > max_bytes:
            error = f"record is {end - start} characters > read.max_record_bytes {max_bytes}"
        if error is None and has_bad_bytes and (bad := _SURROGATE_CHAR.search(text, start, end)):
            error = f"bytes that are not UTF-8 at line {line + text.count(chr(10), start, bad.start())}"
        if error is None:
            error = check_value(value, text, start, end, max_depth)
        yield Parsed(None if error else value, line, error, _safe_text(text[start:min(end, start + EXCERPT)]) if error else "")
        line += text.count("\n", start, end)
        pos = _WS.match(text, end).end()   # type: ignore[union-attr]
        line += text.count("\n", end, pos)
        if text.startswith(",", pos):
            pos += 1
            continue
        if text.startswith("]", pos):
            if text[pos + 1:].strip():
                yield Parsed(None, line, "text after the closing ']' of the array", _safe_text(text[pos:pos + 200]))
            return
        if text.startswith(("{", "["), pos):   # a missing comma: say so, and read on
            yield Parsed(None, line, "expected ',' between records", _safe_text(text[pos:pos + 200]))
            continue
        yield Parsed(None, line, "expected ',' or the closing ']' of the array (the rest of the file is lost)",
                     _safe_text(text[pos:pos + 200]))
        return
