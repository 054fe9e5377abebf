"""Reading the metadata JSONL that images come with: one file, or every ``*.jsonl`` in a folder.

Each line is a JSON object keyed to its image by ``file_name`` (or ``f_path``, so an earlier run's
``records/`` can be fed back). A line that is not such an object stops the read with an error naming the
file and line: without a key it cannot be attached to any image, so there is nothing to quarantine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fgclip_core.storage import filesystem


@dataclass(frozen=True)
class MetadataRow:
    file: str
    line: int
    key: str
    row: dict[str, Any]


def iter_metadata_rows(url: str) -> Iterator[MetadataRow]:
    fs, p = filesystem(url)
    files = sorted(fs.glob(p.rstrip("/") + "/*.jsonl")) if fs.isdir(p) else [p]
    for path in files:
        with fs.open(path, "rt") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = row.get("file_name") or row.get("f_path")
                except (ValueError, RecursionError, AttributeError) as e:   # digits over int's limit, deep nesting
                    raise ValueError(f"{path}:{n}: not a JSON object: {type(e).__name__}: {str(e)[:200]}") from e
                if not isinstance(key, str):
                    raise ValueError(f"{path}:{n}: needs a 'file_name' or 'f_path' string")
                yield MetadataRow(path, n, key, row)
