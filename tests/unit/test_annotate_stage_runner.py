"""The annotation as separate stages (captions -> regions -> negatives) over the sample's first batch."""

from __future__ import annotations

import json
import shutil
import socket

import pytest

from fgclip_core.annotate.boxes import Detection
from fgclip_core.annotate.captions import CaptionResult
from fgclip_core.annotate.config import load_annotate_config
from fgclip_core.annotate.pipeline import Annotator, read_quarantine, read_records
from fgclip_core.annotate.stages import EndpointUnavailableError, StageRunner, run_stage
from fgclip_core.sample.batches import land_sample_batch


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    return land_sample_batch(str(tmp_path_factory.mktemp("raw")), 1)


def _cfg(batch: str, *extra: str):
    meta = f"{batch}/metadata.jsonl"
    return load_annotate_config(None, [f"captions.metadata_file={meta}", "boxes.backend=metadata",
                                       f"boxes.metadata_file={meta}", *extra])


def _chain(cfg, images: str, root) -> list[str]:
    outs = [str(root / s) for s in ("captions", "regions", "negatives")]
    prev = None
    for stage, out in zip(("captions", "regions", "negatives"), outs, strict=True):
        summary = run_stage(stage, cfg, images, out, prev)
        assert summary.records + summary.quarantined == summary.inputs
        prev = out
    return outs


def test_the_stages_make_what_the_one_shot_run_makes(batch, tmp_path):
    cfg = _cfg(batch)
    captions, regions, negatives = _chain(cfg, batch, tmp_path)
    one_shot = tmp_path / "one-shot"
    Annotator(cfg, batch, str(one_shot)).run(progress=False)
    expected = [r.to_dict() for r in read_records(str(one_shot))]
    assert [r.to_dict() for r in read_records(negatives)] == expected and len(expected) == 7

    caps = read_records(captions)
    assert all(r.caption and r.short_caption and not r.bbox_info for r in caps)
    regs = read_records(regions)
    assert all(r.bbox_info for r in regs) and not any(g.short_expr_negs for r in regs for g in r.bbox_info)
    assert any(g.short_expr_negs for r in read_records(negatives) for g in r.bbox_info)
    summary = json.loads((tmp_path / "negatives" / "summary.json").read_text())
    assert summary["stage"] == "negatives" and summary["inputs"] == 7 and len(summary["sha256"]) == 64


def test_a_broken_image_is_quarantined_at_decode_and_counted(batch, tmp_path):
    images = tmp_path / "batch"
    shutil.copytree(batch, images)
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    summary = run_stage("captions", _cfg(str(images)), str(images), str(tmp_path / "out"))
    assert (summary.inputs, summary.records, summary.quarantined) == (8, 7, 1)
    assert summary.quarantined_by_stage == {"decode": 1}
    (q,) = read_quarantine(str(tmp_path / "out"))
    assert q["f_path"] == "broken.jpg" and "cannot decode" in q["reason"]


def test_later_stages_need_the_previous_output(batch, tmp_path):
    with pytest.raises(ValueError, match="previous stage"):
        run_stage("regions", _cfg(batch), batch, str(tmp_path / "x"))
    with pytest.raises(ValueError, match="unknown annotation stage"):
        run_stage("boxes", _cfg(batch), batch, str(tmp_path / "x"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_caption_endpoint_fails_the_stage_naming_it(batch, tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    cfg = _cfg(batch, "captions.backend=openai", f"endpoint.base_url={url}", "endpoint.max_retries=0",
               "endpoint.connect_timeout_s=1")
    with pytest.raises(EndpointUnavailableError, match=f"caption endpoint {url}.*none of 7 request"):
        run_stage("captions", cfg, batch, str(tmp_path / "out"))


def test_unreachable_box_and_negatives_endpoints_fail_their_stage(batch, tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    down = [f"endpoint.base_url={url}", "endpoint.max_retries=0", "endpoint.connect_timeout_s=1"]
    captions = str(tmp_path / "captions")
    run_stage("captions", _cfg(batch), batch, captions)
    boxes = load_annotate_config(None, [f"captions.metadata_file={batch}/metadata.jsonl", "boxes.backend=openai",
                                        *down])
    with pytest.raises(EndpointUnavailableError, match=f"box endpoint {url}"):
        run_stage("regions", boxes, batch, str(tmp_path / "regions-down"), captions)
    regions = str(tmp_path / "regions")
    run_stage("regions", _cfg(batch), batch, regions, captions)
    with pytest.raises(EndpointUnavailableError, match=f"negatives endpoint {url}"):
        run_stage("negatives", _cfg(batch, "negatives.backend=llm", *down), batch, str(tmp_path / "neg"), regions)


class _OneFails:
    def caption(self, images):
        return [CaptionResult(error="captions/openai: HTTP 400") if i == 0 else
                CaptionResult("A long caption of a picture here.", "A picture.", None, {})
                for i, _ in enumerate(images)]


def test_a_caption_endpoint_failing_some_images_quarantines_them(batch, tmp_path):
    cfg = _cfg(batch, "captions.backend=openai")
    out = str(tmp_path / "out")
    annotator = Annotator(cfg, batch, out, captioner=_OneFails(), stages=("captions",))
    summary = StageRunner("captions", cfg, batch, out, annotator).run()
    assert (summary.records, summary.quarantined, summary.quarantined_by_stage) == (6, 1, {"captions": 1})


class _Detector:
    """Finds the first phrase of every image in its top-left quarter; fails on the image named ``fail``."""

    def __init__(self, fail: str):
        self.fail, self.seen = fail, []

    def provenance(self):
        return {"backend": "test", "model": "fake", "prompt_version": "none"}

    def detect(self, images, queries):
        self.seen.append(len(images))
        return [f"boxes/test: cannot see {self.fail}" if i == 0 else [Detection(0, 0.9, (0.0, 0.0, 0.5, 0.5))]
                for i, _ in enumerate(images)]


def test_the_regions_stage_with_a_detector_reloads_the_pictures(batch, tmp_path):
    images = tmp_path / "batch"
    shutil.copytree(batch, images)
    cfg = load_annotate_config(None, [f"captions.metadata_file={images}/metadata.jsonl"])
    run_stage("captions", cfg, str(images), str(tmp_path / "captions"))
    (images / "coins.png").write_bytes(b"gone bad")  # changed after captioning: the reload sees it
    detector = _Detector("astronaut")
    out = str(tmp_path / "regions")
    annotator = Annotator(cfg, str(images), out, detector=detector, stages=("regions",))
    summary = StageRunner("regions", cfg, str(images), out, annotator).run(str(tmp_path / "captions"))
    assert detector.seen == [6]  # 7 records, one picture no longer decodes
    assert (summary.inputs, summary.records, summary.quarantined) == (7, 5, 2)
    assert summary.quarantined_by_stage == {"boxes": 1, "decode": 1}
    assert all(len(r.bbox_info) == 1 for r in read_records(out))
