"""The bundled sample as image batches of a raw source, the way a user's images land.

``land_sample_batch(source_url, index)`` writes ``<source_url>/batch-000<index>/``: the batch's photos
and a ``metadata.jsonl`` (alt text + labelled boxes, the format ``fgclip annotate`` reads). The 13
sample photos are split into :data:`SAMPLE_BATCHES` batches (7 + 6), so a demo can show a second one
landing. A local batch appears at once (written into a hidden folder, then renamed); on an object store
the images go first and ``metadata.jsonl`` last. Landing a batch that is already there changes nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fgclip_core import storage
from fgclip_core.sample.materialize import materialize_sample
from fgclip_core.sample.metadata import image_metadata_line

SAMPLE_BATCHES = 2
_SPLIT = 7  # images in batch 1; the rest are batch 2
METADATA_NAME = "metadata.jsonl"


def sample_batch_name(index: int) -> str:
    return f"batch-{index:04d}"


def _write_batch(dest: str, index: int, workdir: Path) -> None:
    sample = materialize_sample(workdir / "sample")
    records = sample.records[:_SPLIT] if index == 1 else sample.records[_SPLIT:]
    fs, base = storage.filesystem(dest)
    fs.makedirs(base, exist_ok=True)
    for r in records:
        fs.put_file(str(sample.image_path(r)), f"{base.rstrip('/')}/{r.f_path}")
    with fs.open(f"{base.rstrip('/')}/{METADATA_NAME}", "w") as f:
        f.write("".join(image_metadata_line(r) for r in records))


def land_sample_batch(source_url: str, index: int) -> str:
    """Put sample batch ``index`` (1 or 2) into the raw source; returns the batch's URL."""
    if not 1 <= index <= SAMPLE_BATCHES:
        raise ValueError(f"sample batch {index}: the sample has batches 1..{SAMPLE_BATCHES}")
    name = sample_batch_name(index)
    url = storage.join(source_url, name)
    fs, path = storage.filesystem(url)
    if fs.exists(path):
        return url
    with tempfile.TemporaryDirectory(prefix="fgclip-sample-") as tmp:
        if storage.is_remote(source_url):
            _write_batch(url, index, Path(tmp))
        else:
            landing = Path(source_url) / f".{name}.landing-{os.getpid()}"
            _write_batch(str(landing), index, Path(tmp))
            try:
                landing.rename(Path(source_url) / name)
            except OSError:  # another process landed it first
                if not (Path(source_url) / name).is_dir():
                    raise
                storage.filesystem(str(landing))[0].rm(str(landing), recursive=True)
    return url
