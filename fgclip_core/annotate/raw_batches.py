"""A raw source of image batches: a local folder or an ``s3://`` prefix whose direct subfolders are batches.

Each batch (``<source>/<batch>/``) holds images (any depth) and optionally a ``metadata.jsonl`` of alt
text / labelled boxes (what ``captions.metadata_file`` and ``boxes.backend=metadata`` read). A batch name
is a partition key, so it must match :data:`BATCH_NAME`; names starting with ``.`` or ``_`` are still
landing (or private) and are not listed. ``snapshot_batch`` copies a batch into an immutable folder
(images and metadata only), so later changes to the source never alter what was annotated; metadata
lines no image can be matched by (not JSON, no ``file_name``) are left out and reported, not fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec

from fgclip_core import storage
from fgclip_core.annotate.config import PipelineConfig

log = logging.getLogger(__name__)
BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
METADATA_NAME = "metadata.jsonl"


class RawSourceError(OSError):
    """The raw source cannot be listed or read; the message names it."""


@dataclass(frozen=True)
class BatchSnapshot:
    url: str
    images: int
    metadata_rows: int
    ignored_files: int
    bytes: int
    sha256: str  # over (relative path, file sha256) of every copied file, sorted by path
    metadata_rejected: list[dict[str, Any]] = field(default_factory=list)  # {"line", "reason", "text"}


def split_metadata(data: bytes, where: str) -> tuple[bytes, list[dict[str, Any]]]:
    """The metadata lines an image can be matched by (a JSON object with a ``file_name`` or ``f_path``
    string), and the others with the reason, so that one bad line does not stop the whole batch."""
    kept: list[bytes] = []
    rejected: list[dict[str, Any]] = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            key = row.get("file_name") or row.get("f_path") if isinstance(row, dict) else None
            reason = None if isinstance(key, str) else "needs a 'file_name' or 'f_path' string"
        except UnicodeDecodeError as e:
            reason = f"not UTF-8: {e.reason}"
        except json.JSONDecodeError as e:
            reason = f"not JSON: {e.msg}"
        if reason is None:
            kept.append(raw.rstrip(b"\r"))
        else:
            log.warning("%s:%d: metadata line skipped: %s", where, n, reason)
            rejected.append({"id": f"{METADATA_NAME}:{n}", "line": n, "reason": reason,
                             "text": raw[:300].decode("utf-8", "replace")})
    return b"".join(line + b"\n" for line in kept), rejected


def _files(url: str) -> tuple[fsspec.AbstractFileSystem, str, list[str]]:
    """(fs, base path, relative paths of the plain files under url); local links leading outside are dropped."""
    fs, base = storage.filesystem(url)
    base = base.rstrip("/")
    local = not storage.is_remote(url)
    root_real = os.path.realpath(base) if local else ""
    rels = []
    for p in sorted(fs.find(base)):
        rel = p[len(base) + 1:]
        if local:
            real = os.path.realpath(p)
            if os.path.commonpath([root_real, real]) != root_real:
                log.warning("%s: a link that leads outside the batch (%s); ignored", p, real)
                continue
        rels.append(rel)
    return fs, base, rels


def list_batches(source_url: str) -> dict[str, str]:
    """Batch name -> fingerprint (a hash of its file names and sizes: changes when files land or change)."""
    fs, base = storage.filesystem(source_url)
    try:
        if not fs.exists(base):
            return {}
        entries = fs.ls(base, detail=True)
    except Exception as e:  # any failure to list means the same thing to the caller
        raise RawSourceError(f"{source_url}: raw source cannot be listed: {type(e).__name__}: {e}") from e
    out: dict[str, str] = {}
    for entry in sorted(entries, key=lambda e: e["name"]):
        if entry.get("type") != "directory":
            continue
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if name.startswith((".", "_")):
            continue
        if not BATCH_NAME.match(name):
            log.warning("%s/%s: not a usable batch name (letters, digits, '_', '.', '-'); skipped", source_url, name)
            continue
        h = hashlib.sha256()
        prefix = entry["name"].rstrip("/")
        for path, info in sorted(fs.find(prefix, detail=True).items()):
            h.update(f"{path[len(prefix) + 1:]}\0{info.get('size')}\n".encode())
        out[name] = h.hexdigest()[:16]
    return out


def snapshot_batch(batch_url: str, dest_url: str, extensions: Sequence[str] | None = None) -> BatchSnapshot:
    """Copy the batch's images and ``metadata.jsonl`` to ``dest_url`` (a fresh folder); other files are counted."""
    exts = tuple(e.lower() for e in (extensions or PipelineConfig().extensions))
    src_fs, src_base, rels = _files(batch_url)
    if not rels and not src_fs.exists(src_base):
        raise RawSourceError(f"{batch_url}: batch not found in the raw source")
    dst_fs, dst_base = storage.filesystem(dest_url)
    dst_base = dst_base.rstrip("/")
    dst_fs.makedirs(dst_base, exist_ok=True)
    h = hashlib.sha256()
    images = ignored = metadata_rows = total = 0
    rejected: list[dict[str, Any]] = []
    for rel in rels:
        is_meta = rel == METADATA_NAME
        if not (is_meta or rel.lower().endswith(exts)):
            ignored += 1
            continue
        with src_fs.open(f"{src_base}/{rel}", "rb") as f:
            data = f.read()
        if is_meta:
            data, rejected = split_metadata(data, f"{batch_url.rstrip('/')}/{rel}")
        else:
            dst_fs.makedirs(f"{dst_base}/{rel}".rsplit("/", 1)[0], exist_ok=True)
        with dst_fs.open(f"{dst_base}/{rel}", "wb") as f:
            f.write(data)
        h.update(f"{rel}\0{hashlib.sha256(data).hexdigest()}\n".encode())
        total += len(data)
        if is_meta:
            metadata_rows = sum(1 for line in data.splitlines() if line.strip())
        else:
            images += 1
    return BatchSnapshot(dest_url, images, metadata_rows, ignored, total, h.hexdigest(), rejected)
