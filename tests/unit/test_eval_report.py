"""The HTML/PNG report from hand-made results: side-by-side table, inline images, boxes drawn."""

from __future__ import annotations

import base64
import io
import re

from PIL import Image

from fgclip_core.eval.report import write_report
from fgclip_core.eval.result import SuiteResult


def fgovd_result(image: str, accuracy: float, missing: list[str]) -> SuiteResult:
    item = {"kind": "fgovd", "line": 3, "image": image, "bbox_xywh": [10.0, 10.0, 40.0, 30.0],
            "positive": "a <red> cup", "positive_score": 0.4, "negatives": ["a blue cup", "a green cup"],
            "negative_scores": [0.5, 0.1], "rank": 1, "correct": False}
    return SuiteResult(suite="fgovd", benchmark="fgovd-hard", n=10, metrics={"accuracy": accuracy},
                       counts={"items": 10}, missing_images=missing, details=[],
                       curves={"accuracy": [accuracy, 1.0, 1.0]}, gallery=[item])


def test_report_side_by_side_with_inline_box_image(tmp_path):
    img_path = tmp_path / "white.png"
    Image.new("RGB", (100, 80), "white").save(img_path)
    model = fgovd_result(str(img_path), 0.75, missing=[str(tmp_path / "gone.jpg")])
    base = fgovd_result(str(img_path), 0.5, missing=[])
    paths = write_report([(model, base)], tmp_path / "out", model="ckpt", baseline="base")
    page = paths.html.read_text()
    assert re.search(r"<td>accuracy</td><td>75.00</td><td>50.00</td><td class=\"up\">\+25.00</td>", page)
    assert "1 missing image(s)" in page and "gone.jpg" in page
    assert "a &lt;red&gt; cup" in page and "wrong (rank 2)" in page  # escaped text, 1-based rank
    thumb = Image.open(io.BytesIO(base64.b64decode(page.split("data:image/jpeg;base64,", 1)[1].split('"')[0])))
    red = [p for p in thumb.convert("RGB").getdata() if p[0] > 200 and p[1] < 120 and p[2] < 120]
    assert red, "the FG-OVD box is drawn on the gallery image"
    assert paths.png.read_bytes().startswith(b"\x89PNG")


def test_report_without_baseline_and_missing_gallery_image(tmp_path):
    res = fgovd_result(str(tmp_path / "nope.png"), 0.2, missing=[])
    page = write_report([(res, None)], tmp_path / "o").html.read_text()
    assert "missing image</div>" in page
    assert "<td>accuracy</td><td>20.00</td><td>-</td>" in page
