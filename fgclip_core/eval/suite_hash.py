"""A content hash of a benchmark set: which benchmark versions a model was evaluated on.

Independent of where the files lie (absolute paths never enter it): per benchmark, its name, suite,
protocol settings, and the relative names + contents of its data, class-names and image files. Two
evaluations are comparable when their suite hashes are equal.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fgclip_core.eval.config import BenchmarkSpec
from fgclip_core.hashing import sha256_file


def _tree(h: hashlib._Hash, path: str | None) -> None:
    if path is None:
        h.update(b"-\0")
        return
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: benchmark file or folder not found")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        rel = f.name if f == p else f.relative_to(p).as_posix()
        h.update(f"{rel}\0{sha256_file(f)}\0".encode())


def suite_sha256(specs: list[BenchmarkSpec]) -> str:
    h = hashlib.sha256()
    for spec in specs:
        settings = spec.model_dump(exclude={"data", "images", "classnames"})
        h.update(json.dumps(settings, sort_keys=True).encode() + b"\0")
        for part in (spec.data, spec.classnames, spec.images):
            _tree(h, part)
    return h.hexdigest()
