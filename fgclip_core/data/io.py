"""Reading and writing annotation files.

Two input layouts, detected from the first character of a file:
- the official FineHARD JSON: one JSON array per file; records carry no ``id``; ``f_path`` starts
  with a prefix to strip (``ReadConfig.strip_prefixes``); ``short_expr_negs`` is a dict
  ``{"0": ..., "9": ...}`` (or a list); ``bbox`` may be the 5-number template ``xyxy + score``;
- our JSONL: one ``FineHARDRecord.to_dict()`` per line (extra fields are ignored, so official
  records written one per line also read).

Reading yields ``RawItem``s (the parsed value plus where it came from) so that a bad line is
quarantined with its file and line rather than stopping the run; ``record_from_raw`` turns one raw
value into a ``FineHARDRecord`` or raises ``RecordError`` (layout and types only: meaning is
``validate``'s job). Writing is always JSONL.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fgclip_core import storage
from fgclip_core.data.config import ReadConfig
from fgclip_core.data.errors import Reason, RecordError
from fgclip_core.data.parse import parse_json_array, parse_jsonl
from fgclip_core.data.paths import check_relative_path
from fgclip_core.data.records import FineHARDRecord, Region

_KEY_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
KEY_MAX_LENGTH = 200
KEY_PATTERN = re.compile(rf"^[A-Za-z0-9_-]{{1,{KEY_MAX_LENGTH}}}$")
_KEY_STEM_LENGTH = 120
_KEY_HASH_LENGTH = 12


@dataclass
class RawItem:
    raw: Any                 # the parsed JSON value; for an unparseable line, the line's text
    source: str              # the annotation file
    index: int               # 0-based position of the record in its file
    line: int | None = None  # 1-based line the record starts on
    parse_error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line} (record {self.index})"


def annotation_files(path: str) -> list[str]:
    """A single file, or every ``*.json`` / ``*.jsonl`` directly inside a folder (sorted)."""
    fs, p = storage.filesystem(path)
    if not fs.exists(p):
        raise FileNotFoundError(f"{path}: annotation file or folder does not exist")
    if not fs.isdir(p):
        return [path]
    names = sorted(n for n in fs.ls(p, detail=False) if n.endswith((".json", ".jsonl")))
    if not names:
        raise FileNotFoundError(f"{path}: folder holds no .json or .jsonl annotation files")
    base = path.rstrip("/")
    return [storage.join(base, n.rsplit("/", 1)[-1]) for n in names]


def iter_raw(path: str, cfg: ReadConfig | None = None) -> Iterator[RawItem]:
    """Yield every record of every annotation file under ``path``, bad ones included (``data.parse``)."""
    cfg = cfg or ReadConfig()
    for f in annotation_files(path):
        yield from _iter_file(f, cfg)


def _iter_file(path: str, cfg: ReadConfig) -> Iterator[RawItem]:
    fs, p = storage.filesystem(path)
    kind = fs.info(p).get("type")
    if kind != "file":   # a FIFO named x.jsonl would block the read forever: one entry, and the next file
        yield RawItem(raw=path, source=path, index=0, line=None,
                      parse_error=f"annotation file is {kind or 'not a regular file'}, not a regular file")
        return
    with fs.open(p, "rb") as fh:
        data = fh.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    is_array = data.lstrip()[:1] == b"["
    parser = parse_json_array if is_array else parse_jsonl
    for index, parsed in enumerate(parser(data, cfg.max_record_bytes, cfg.max_json_depth)):
        if parsed.error is None:
            yield RawItem(raw=parsed.value, source=path, index=index, line=parsed.line)
        else:
            yield RawItem(raw=parsed.excerpt, source=path, index=index, line=parsed.line, parse_error=parsed.error)


def strip_prefix(f_path: str, prefixes: Iterable[str]) -> str:
    for prefix in prefixes:
        if prefix and f_path.startswith(prefix):
            return f_path[len(prefix):]
    return f_path


def key_from_path(f_path: str) -> str:
    """A WebDataset-safe key (letters, digits, ``_``, ``-``; no dots or slashes) for an image path.

    The readable part is the path without its extension, unsafe characters squeezed to ``_`` and
    cut to 120 characters; a hash of the whole path (extension included) follows, so that paths the
    readable part cannot tell apart (``a/x.png``, ``a_x.png``, ``a/x.jpg``) still get distinct keys,
    the same in every run and whatever other records the input holds."""
    name = f_path.rsplit("/", 1)[-1]
    stem = f_path.rsplit(".", 1)[0] if "." in name else f_path
    readable = _KEY_SAFE.sub("_", stem).strip("_")[:_KEY_STEM_LENGTH] or "image"
    digest = hashlib.sha256(f_path.encode("utf-8", "surrogatepass")).hexdigest()[:_KEY_HASH_LENGTH]
    return f"{readable}-{digest}"


def _text(value: Any, where: str, field: str = "", *, required: bool = True) -> str:
    """``value`` if it is text; ``where`` + ``field`` name it in the error (joined only then: this runs
    for every text of every record the loader reads)."""
    if type(value) is str:
        return value
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise RecordError(Reason.FIELD_NOT_TEXT, f"{where}{field} is {type(value).__name__}, not text")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _negatives(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        keys = list(value.keys())
        if all(isinstance(k, str) and k.isdigit() for k in keys):
            keys.sort(key=int)
        values = [value[k] for k in keys]
    elif isinstance(value, list):
        values = value
    else:
        raise RecordError(Reason.RECORD_MALFORMED, f"{where} is {type(value).__name__}, not a list or dict")
    if all(type(v) is str for v in values):
        return list(values)
    return [_text(v, where, f"[{i}]") for i, v in enumerate(values)]


def _region(raw: Any, index: int) -> Region:
    where = f"bbox_info[{index}]"
    if not isinstance(raw, dict):
        raise RecordError(Reason.RECORD_MALFORMED, f"{where} is {type(raw).__name__}, not an object")
    bbox = raw.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) not in (4, 5) or not all(_number(v) for v in bbox):
        raise RecordError(Reason.RECORD_MALFORMED, f"{where}.bbox must be 4 numbers (or 5: xyxy + score), got {bbox!r}")
    score = raw.get("score")
    if len(bbox) == 5:
        score = bbox[4]
    if score is not None and not _number(score):
        raise RecordError(Reason.RECORD_MALFORMED, f"{where}.score must be a number, got {score!r}")
    flag = raw.get("flag_short_neg", 0)
    if flag is None:
        flag = 0
    if isinstance(flag, bool):
        flag = int(flag)
    if flag not in (0, 1) or (isinstance(flag, float) and not flag.is_integer()):
        raise RecordError(Reason.RECORD_MALFORMED, f"{where}.flag_short_neg must be 0 or 1, got {flag!r}")
    prov = raw.get("provenance") or {}
    if not isinstance(prov, dict):
        raise RecordError(Reason.RECORD_MALFORMED, f"{where}.provenance must be an object")
    return Region(
        bbox=[float(v) for v in bbox[:4]],
        short_expr=_text(raw.get("short_expr"), where, ".short_expr"),
        long_expr=_text(raw.get("long_expr"), where, ".long_expr", required=False),
        flag_short_neg=int(flag),
        short_expr_negs=_negatives(raw.get("short_expr_negs"), where + ".short_expr_negs"),
        score=None if score is None or (isinstance(score, float) and math.isnan(score)) else float(score),
        provenance=prov,
    )


def _dimension(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RecordError(Reason.RECORD_MALFORMED, f"{name} must be a non-negative integer, got {value!r}")
    return value


def record_from_raw(raw: Any, cfg: ReadConfig | None = None) -> FineHARDRecord:
    """Normalise one raw record (official or our layout). Raises ``RecordError``."""
    cfg = cfg or ReadConfig()
    if not isinstance(raw, dict):
        raise RecordError(Reason.RECORD_MALFORMED, f"record is {type(raw).__name__}, not an object")
    f_path = raw.get("f_path")
    if not isinstance(f_path, str) or not f_path.strip():
        raise RecordError(Reason.RECORD_MALFORMED, f"f_path must be a non-empty string, got {f_path!r}")
    f_path = strip_prefix(f_path, cfg.strip_prefixes)
    check_relative_path(f_path)
    rid = raw.get("id")
    if rid is None:
        rid = key_from_path(f_path)
    elif not isinstance(rid, str) or not KEY_PATTERN.match(rid):
        raise RecordError(Reason.RECORD_MALFORMED, f"id {str(rid)[:200]!r} is not a WebDataset-safe key "
                                                   f"(1 to {KEY_MAX_LENGTH} letters, digits, '_' and '-')")
    bbox_info = raw.get("bbox_info")
    if bbox_info is None:
        bbox_info = []
    if not isinstance(bbox_info, list):
        raise RecordError(Reason.RECORD_MALFORMED, f"bbox_info is {type(bbox_info).__name__}, not a list")
    prov = raw.get("provenance") or {}
    if not isinstance(prov, dict):
        raise RecordError(Reason.RECORD_MALFORMED, "provenance must be an object")
    return FineHARDRecord(
        id=rid,
        f_path=f_path,
        caption=_text(raw.get("caption"), "caption"),
        short_caption=_text(raw.get("short_caption"), "short_caption"),
        bbox_info=[_region(r, i) for i, r in enumerate(bbox_info)],
        width=_dimension(raw.get("width"), "width"),
        height=_dimension(raw.get("height"), "height"),
        provenance=prov,
    )


def dumps_record(record: FineHARDRecord) -> str:
    """One canonical JSON line (sorted keys: the same record always gives the same bytes)."""
    return json.dumps(record.to_dict(), sort_keys=True, ensure_ascii=False, allow_nan=False)


def write_jsonl(records: Iterable[FineHARDRecord], path: str) -> int:
    """Write records as JSONL (atomically for local paths and object stores). Returns the count."""
    from fgclip_core.data.atomic import atomic_open

    n = 0
    with atomic_open(path, "w") as fh:
        for r in records:
            fh.write(dumps_record(r) + "\n")
            n += 1
    return n


def read_jsonl(path: str) -> Iterator[FineHARDRecord]:
    """Read our JSONL strictly (for files this project wrote, e.g. ``kept.jsonl``)."""
    fs, p = storage.filesystem(path)
    with fs.open(p, "r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield record_from_raw(json.loads(line), ReadConfig(strip_prefixes=[]))
            except (json.JSONDecodeError, RecordError) as e:
                raise ValueError(f"{path}:{lineno}: {e}") from e
