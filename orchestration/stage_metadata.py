"""Metadata the data assets show in the UI: counts in / out / quarantined by reason, the folder, the
content hash, and a Markdown preview (a picture with its boxes and captions, negatives, quarantine)."""

from __future__ import annotations

import json
from typing import Any

from dagster import MetadataValue

from fgclip_core import storage
from fgclip_core.data.preview import images_preview_md, quarantine_md, record_preview_md
from fgclip_core.data.records import FineHARDRecord
from orchestration.refs import Ref


def location(url: str) -> Any:
    return MetadataValue.url(url) if storage.is_remote(url) else MetadataValue.path(url)


def counts_metadata(ref: Ref, by_reason: dict[str, int]) -> dict[str, Any]:
    meta: dict[str, Any] = {k: v for k, v in ref.counts.items()}
    meta["quarantined_by_reason"] = MetadataValue.json(dict(sorted(by_reason.items())))
    meta["sha256"] = MetadataValue.text(ref.sha256)
    meta["uri"] = location(ref.uri)
    return meta


def read_jsonl_rows(url: str, limit: int = 50) -> list[dict[str, Any]]:
    """The first ``limit`` rows of a JSONL file or of every chunk-*.jsonl in a folder (missing: none)."""
    fs, path = storage.filesystem(url)
    if not fs.exists(path):
        return []
    files = sorted(fs.glob(path.rstrip("/") + "/chunk-*.jsonl")) if fs.isdir(path) else [path]
    rows: list[dict[str, Any]] = []
    for f in files:
        with fs.open(f, "rt") as fh:
            for line in fh:
                if line.strip():
                    rows.append(json.loads(line))
                    if len(rows) >= limit:
                        return rows
    return rows


def preview_markdown(records: list[FineHARDRecord], images_uri: str, quarantine: list[dict[str, Any]],
                     title: str) -> Any:
    parts = [f"### {title}", ""]
    if records:
        rec = next((r for r in records if r.bbox_info), records[0])
        parts.append(record_preview_md(rec, storage.join(images_uri, rec.f_path)))
    else:
        parts.append("no record passed this stage")
    parts += ["", "#### Quarantined", "", quarantine_md(quarantine)]
    return MetadataValue.md("\n".join(parts))


def images_markdown(image_urls: list[str], title: str) -> Any:
    return MetadataValue.md(f"### {title}\n\n" + (images_preview_md(image_urls) if image_urls else "no images"))
