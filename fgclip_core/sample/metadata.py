"""The metadata a user's images typically come with, written from the sample's annotations.

One JSON line per image: ``file_name``, ``caption`` (alt text / description), ``alt_text`` (a short
title) and ``regions`` (labelled boxes: ``bbox`` normalised xyxy, ``phrase``, ``description``). This is the
input of the annotation stage's offline backends (``captions.metadata_file``, ``boxes.backend=metadata``),
which then derive the rest (short captions, hard negatives) themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

from fgclip_core.data.records import FineHARDRecord
from fgclip_core.sample.materialize import SampleSet


def image_metadata_line(r: FineHARDRecord) -> str:
    """One metadata JSONL line (with its newline) for a sample record."""
    return json.dumps({
        "file_name": r.f_path,
        "caption": r.caption,
        "alt_text": r.short_caption,
        "regions": [{"bbox": reg.bbox, "phrase": reg.short_expr, "description": reg.long_expr}
                    for reg in r.bbox_info],
    }) + "\n"


def write_image_metadata(sample: SampleSet, dest: Path) -> Path:
    with Path(dest).open("w") as f:
        for r in sample.records:
            f.write(image_metadata_line(r))
    return Path(dest)
