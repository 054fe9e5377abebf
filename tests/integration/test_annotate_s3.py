"""The pipeline reads images and writes records/quarantine/markers on S3 (loopback moto_server)."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from fgclip_core.annotate.config import load_annotate_config
from fgclip_core.annotate.pipeline import Annotator, read_quarantine, read_records
from fgclip_core.storage import filesystem

pytestmark = pytest.mark.integration


def test_images_and_output_on_s3_with_resume(moto_s3):
    root = moto_s3.new_prefix("annotate-images")
    out = moto_s3.new_prefix("annotate-out")
    fs, base = filesystem(root)
    meta = []
    for i in range(5):
        buf = io.BytesIO()
        Image.new("RGB", (40 + i, 30), (50 * i, 100, 150)).save(buf, format="PNG")
        fs.pipe(f"{base}/sub/im{i}.png", buf.getvalue())
        if i != 3:
            meta.append({"file_name": f"sub/im{i}.png", "caption": f"A small red cup number {i} on a wooden table."})
    fs.pipe(f"{base}/metadata.jsonl", "".join(json.dumps(m) + "\n" for m in meta).encode())
    cfg = load_annotate_config(None, ["pipeline.chunk_size=2"])
    first = Annotator(cfg, root, out).run(progress=False)
    assert (first.images, first.records, first.quarantined, first.chunks) == (5, 4, 1, 3)
    recs = read_records(out)
    assert [r.f_path for r in recs] == ["sub/im0.png", "sub/im1.png", "sub/im2.png", "sub/im4.png"]
    assert recs[0].width == 40 and recs[0].short_caption == "A small red cup number 0 on a wooden table."
    [q] = read_quarantine(out)
    assert q["f_path"] == "sub/im3.png" and q["stage"] == "captions"
    again = Annotator(cfg, root, out).run(progress=False)
    assert again.chunks_skipped == 3 and again.records == 4
