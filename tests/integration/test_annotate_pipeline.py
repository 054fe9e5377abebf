"""The annotation pipeline end to end: sample photos -> records that pass the data layer's validation,
resume after a crash, quarantine with reasons, the CLI, and an endpoint captioner with faults."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from fgclip_core.annotate.backends.tiny import build_tiny_owlv2
from fgclip_core.annotate.captions import SidecarCaptioner
from fgclip_core.annotate.config import AnnotateConfig, load_annotate_config
from fgclip_core.annotate.pipeline import Annotator, read_quarantine, read_records
from fgclip_core.cli import cli
from fgclip_core.data.io import iter_raw
from fgclip_core.data.validate import Validator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def owl_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return build_tiny_owlv2(tmp_path_factory.mktemp("owl"))


def offline_cfg(sample_set, owl_dir, **pipeline) -> AnnotateConfig:
    return load_annotate_config(None, [f"captions.metadata_file={sample_set.annotations_path}",
                                       "boxes.backend=hf_local", f"boxes.model_dir={owl_dir}", "boxes.batch_size=4",
                                       *[f"pipeline.{k}={v}" for k, v in pipeline.items()]])


def validate(out, images_root) -> tuple[int, list]:
    v = Validator(str(images_root))
    outcomes = [v.check(item) for item in iter_raw(f"{out}/records")]
    return len(outcomes), [o for o in outcomes if not hasattr(o, "record")]


def test_sample_images_end_to_end_pass_validation(sample_set, owl_dir, tmp_path):
    out = tmp_path / "out"
    summary = Annotator(offline_cfg(sample_set, owl_dir, chunk_size=4), str(sample_set.images_root), str(out)).run(
        progress=False)
    n = len(sample_set.records)
    assert (summary.images, summary.records, summary.quarantined) == (n, n, 0)
    records = read_records(str(out))
    assert sorted(r.f_path for r in records) == sorted(r.f_path for r in sample_set.records)
    total, rejected = validate(out, sample_set.images_root)
    assert total == n and rejected == []
    regions = [g for r in records for g in r.bbox_info]
    assert regions and summary.regions == len(regions)
    assert summary.regions_with_negatives == sum(g.flag_short_neg for g in regions) > 0
    for r in records:
        assert set(r.provenance) >= {"caption", "short_caption", "bbox_info"}
        assert r.provenance["caption"]["backend"] == "sidecar"
        for g in r.bbox_info:
            assert g.short_expr.lower() in g.long_expr.lower() and g.long_expr in r.caption
            assert g.score >= 0.4 and 0 <= g.bbox[0] < g.bbox[2] <= 1 and 0 <= g.bbox[1] < g.bbox[3] <= 1
            assert g.provenance["short_expr_negs"]["backend"] == "rules"
            assert (g.flag_short_neg == 1) == (len(g.short_expr_negs) == 10)
    assert json.loads((out / "summary.json").read_text())["records"] == n


class CountingCaptioner:
    """Wraps a captioner, counts the images it saw, and can crash on the k-th call."""

    def __init__(self, inner, crash_on_call: int | None = None):
        self.inner, self.crash_on_call, self.calls, self.seen = inner, crash_on_call, 0, []

    def caption(self, images):
        self.calls += 1
        if self.calls == self.crash_on_call:
            raise KeyboardInterrupt("simulated crash")
        self.seen.extend(i.ref.id for i in images)
        return self.inner.caption(images)


def test_rerun_resumes_after_a_crash_and_skips_done_chunks(sample_set, tmp_path):
    cfg = load_annotate_config(None, [f"captions.metadata_file={sample_set.annotations_path}", "pipeline.chunk_size=3"])
    root = str(sample_set.images_root)
    n = len(sample_set.records)
    first = CountingCaptioner(SidecarCaptioner(cfg.captions, root), crash_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        Annotator(cfg, root, str(tmp_path / "out"), captioner=first).run(progress=False)
    assert len(first.seen) == 3
    second = CountingCaptioner(SidecarCaptioner(cfg.captions, root))
    summary = Annotator(cfg, root, str(tmp_path / "out"), captioner=second).run(progress=False)
    assert second.seen and not set(second.seen) & set(first.seen)  # chunk 0 was not redone
    assert (summary.records, summary.chunks_skipped) == (n, 1)
    third = CountingCaptioner(SidecarCaptioner(cfg.captions, root))
    again = Annotator(cfg, root, str(tmp_path / "out"), captioner=third).run(progress=False)
    assert third.seen == [] and again.chunks_skipped == again.chunks and again.records == n
    # same result as an uninterrupted run
    Annotator(cfg, root, str(tmp_path / "ref")).run(progress=False)
    assert [r.to_dict() for r in read_records(str(tmp_path / "out"))] == \
        [r.to_dict() for r in read_records(str(tmp_path / "ref"))]
    # operational settings (speed, not content) keep done chunks
    faster = load_annotate_config(None, [f"captions.metadata_file={sample_set.annotations_path}",
                                         "pipeline.chunk_size=3", "endpoint.concurrency=64", "captions.batch_size=9"])
    fifth = CountingCaptioner(SidecarCaptioner(faster.captions, root))
    assert Annotator(faster, root, str(tmp_path / "out"), captioner=fifth).run(progress=False).chunks_skipped == \
        again.chunks and fifth.seen == []
    # a changed config redoes every chunk
    changed = load_annotate_config(None, [f"captions.metadata_file={sample_set.annotations_path}",
                                          "pipeline.chunk_size=3", "captions.short_caption_max_words=5"])
    fourth = CountingCaptioner(SidecarCaptioner(changed.captions, root))
    Annotator(changed, root, str(tmp_path / "out"), captioner=fourth).run(progress=False)
    assert len(fourth.seen) == n


class FailingDetector:
    """Delegates to a real detector but fails the images named in ``fail``."""

    def __init__(self, inner, fail_sizes):
        self.inner, self.fail_sizes = inner, fail_sizes

    def provenance(self):
        return self.inner.provenance()

    def detect(self, images, queries):
        out = self.inner.detect(images, queries)
        return [f"boxes/test: injected failure for {im.size}" if im.size in self.fail_sizes else o
                for im, o in zip(images, out, strict=True)]


def test_failures_are_quarantined_with_reasons(tmp_path, owl_dir):
    from fgclip_core.annotate.backends.hf_local import HFZeroShotDetector

    root = tmp_path / "imgs"
    root.mkdir()
    for i, size in enumerate([(64, 48), (48, 64), (50, 50), (70, 30)]):
        Image.new("RGB", size, (40 * i, 90, 160)).save(root / f"ok{i}.png")
        (root / f"ok{i}.txt").write_text("A small red ball lies on a wooden table. A tall glass vase stands near it.")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    Image.new("RGB", (40, 40)).save(root / "uncaptioned.png")
    cfg = load_annotate_config(None, ["boxes.backend=hf_local", f"boxes.model_dir={owl_dir}", "pipeline.chunk_size=2"])
    det = FailingDetector(HFZeroShotDetector(cfg.boxes), fail_sizes={(50, 50)})
    summary = Annotator(cfg, str(root), str(tmp_path / "out"), detector=det).run(progress=False)
    assert summary.images == 6 and summary.records + summary.quarantined == 6
    q = {row["f_path"]: row for row in read_quarantine(str(tmp_path / "out"))}
    assert set(q) == {"broken.jpg", "uncaptioned.png", "ok2.png"}
    assert q["broken.jpg"]["stage"] == "decode" and "cannot decode" in q["broken.jpg"]["reason"]
    assert q["uncaptioned.png"]["stage"] == "captions" and "no sidecar uncaptioned.txt" in q["uncaptioned.png"]["reason"]
    assert q["ok2.png"]["stage"] == "boxes" and q["ok2.png"]["record"]["caption"].startswith("A small red ball")
    assert summary.quarantined_by_stage == {"decode": 1, "captions": 1, "boxes": 1}
    assert {r.f_path for r in read_records(str(tmp_path / "out"))} == {"ok0.png", "ok1.png", "ok3.png"}


def test_endpoint_captions_with_faults_lose_nothing(openai_server, tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(8):
        Image.new("RGB", (30 + i, 30), (i * 30, 20, 200)).save(root / f"p{i}.png")
    # every request fails twice (500, then malformed JSON) before it succeeds
    openai_server.reset(transient=["500", "malformed"],
                        responder=lambda req: "A blue square fills the frame. It has a thin purple edge.")
    cfg = load_annotate_config(None, ["captions.backend=openai", f"endpoint.base_url={openai_server.url}",
                                      "endpoint.timeout_s=0.5", "endpoint.max_retries=3", "endpoint.backoff_base_s=0.01",
                                      "endpoint.concurrency=4", "pipeline.chunk_size=3"])
    (root / "p5.png").write_bytes(b"garbage")  # a local fault: quarantined at decode, never sent
    summary = Annotator(cfg, str(root), str(tmp_path / "out")).run(progress=False)
    assert (summary.images, summary.records, summary.quarantined) == (8, 7, 1)
    recs = read_records(str(tmp_path / "out"))
    assert all(r.caption.startswith("A blue square") and r.short_caption == "A blue square fills the frame."
               for r in recs)
    assert openai_server.faults["500"] == 7 and openai_server.faults["malformed"] == 7

    # now the endpoint is down for good: everything is quarantined with the reason, nothing lost
    openai_server.reset(always={"Describe": "500"})
    summary = Annotator(cfg, str(root), str(tmp_path / "down")).run(progress=False)
    assert (summary.records, summary.quarantined) == (0, 8)
    reasons = [q["reason"] for q in read_quarantine(str(tmp_path / "down")) if q["stage"] == "captions"]
    assert len(reasons) == 7 and all("HTTP 500" in r and "after 4 attempts" in r for r in reasons)


def test_cli_runs_the_pipeline_and_prints_a_summary(sample_set, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(sample_set.images_root, images)
    cfg = tmp_path / "annotate.yaml"
    cfg.write_text(f"captions:\n  metadata_file: {sample_set.annotations_path}\n")
    res = CliRunner().invoke(cli, ["annotate", "--images", str(images), "--out", str(tmp_path / "out"),
                                   "--config", str(cfg), "--set", "pipeline.chunk_size=5", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "records out" in res.output
    total, rejected = validate(tmp_path / "out", images)
    assert total == len(sample_set.records) and rejected == []
    res = CliRunner().invoke(cli, ["annotate", "--images", str(images)])
    assert res.exit_code != 0 and "--out" in res.output


def test_later_stages_can_run_alone_on_an_earlier_runs_records(sample_set, owl_dir, tmp_path):
    root = str(sample_set.images_root)
    first = load_annotate_config(None, [f"captions.metadata_file={sample_set.annotations_path}"])
    Annotator(first, root, str(tmp_path / "captions")).run(progress=False)
    # boxes + negatives alone, reusing the captions of the first run (its records/ folder)
    later = load_annotate_config(None, [f"captions.metadata_file={tmp_path / 'captions' / 'records'}",
                                        "boxes.backend=hf_local", f"boxes.model_dir={owl_dir}"])
    Annotator(later, root, str(tmp_path / "regions")).run(progress=False)
    a = {r.id: r for r in read_records(str(tmp_path / "captions"))}
    b = {r.id: r for r in read_records(str(tmp_path / "regions"))}
    assert a.keys() == b.keys()
    assert all(a[k].caption == b[k].caption and a[k].short_caption == b[k].short_caption for k in a)
    assert all(not r.bbox_info for r in a.values()) and any(r.bbox_info for r in b.values())


def test_every_stage_through_the_endpoint(openai_server, tmp_path):
    """Captions, grounding boxes and LLM negatives all from the loopback endpoint; output validates."""

    def responder(req):
        parts = req["messages"][0]["content"]
        text = next(p["text"] for p in parts if p["type"] == "text")
        if "hard negative" in text:
            expr = text.split('"')[1]
            noun = text.split('keep the object noun "')[1].split('"')[0]
            colours = ["red", "blue", "green", "pink", "black", "white", "grey", "brown", "orange", "purple", "yellow"]
            own = [c for c in colours if c in expr.split()]
            if own:  # one attribute changed, as asked
                return "\n".join(f"{i}. {expr.replace(own[0], c)}" for i, c in enumerate(colours, 1) if c != own[0])
            return "\n".join(f"{i}. a {c} {noun}" for i, c in enumerate(colours, 1))  # adds an attribute: rejected
        if "Find these phrases" in text:
            phrases = text.split("Find these phrases in the image: ")[1].split(". Answer")[0].split("; ")
            return json.dumps([{"phrase": p, "bbox": [0.1 * i, 0.1, 0.1 * i + 0.3, 0.6], "score": 0.9 - 0.1 * i}
                               for i, p in enumerate(phrases[:4])])
        return "A small yellow duck floats in a round blue bowl. A tall wooden spoon leans on the bowl."

    openai_server.reset(responder=responder, transient=["500"])
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (40 + i, 32), (200, 200, 20 * i)).save(root / f"d{i}.png")
    cfg = load_annotate_config(None, ["captions.backend=openai", "boxes.backend=openai", "negatives.backend=llm",
                                      f"endpoint.base_url={openai_server.url}", "endpoint.backoff_base_s=0.01"])
    summary = Annotator(cfg, str(root), str(tmp_path / "out")).run(progress=False)
    assert (summary.records, summary.quarantined) == (3, 0)
    total, rejected = validate(tmp_path / "out", root)
    assert total == 3 and rejected == []
    rec = read_records(str(tmp_path / "out"))[0]
    assert [g.short_expr for g in rec.bbox_info] == ["a small yellow duck", "a round blue bowl",
                                                     "a tall wooden spoon", "the bowl"]
    assert rec.bbox_info[1].bbox == [0.1, 0.1, 0.4, 0.6]
    # "the bowl" has no attribute: the LLM's answers add one, are rejected, and rules have none to change
    assert [g.flag_short_neg for g in rec.bbox_info] == [1, 1, 1, 0]
    assert "a small red duck" in rec.bbox_info[0].short_expr_negs
    prov = rec.bbox_info[0].provenance["short_expr_negs"]
    assert prov["backend"] == "openai" and prov["difficulty"] == "hard" and prov["levels"] == ["hard"] * 10
    assert prov["checks"]["replaced"] == 0 and rec.bbox_info[2].provenance["short_expr_negs"]["checks"]["replaced"] == 10
    assert rec.provenance["bbox_info"]["prompt_version"] == "grounding-v1"
    assert openai_server.faults["500"] > 0  # every first attempt failed and was retried


def test_negative_backend_failures_quarantine_the_image_with_its_record(openai_server, tmp_path):
    def responder(req):
        text = req["messages"][0]["content"][-1]["text"]
        if "Find these phrases" in text:
            phrases = text.split("Find these phrases in the image: ")[1].split(". Answer")[0].split("; ")
            return json.dumps([{"phrase": p, "bbox": [0.0, 0.0, 0.5, 0.5 + 0.1 * i], "score": 0.9}
                               for i, p in enumerate(phrases)])
        return "answers are not used: negatives requests fail"

    # only the negatives prompt quotes the expression (the marker matches the JSON-escaped request body)
    openai_server.reset(responder=responder, always={'\\"a red kite\\"': "500"})
    root = tmp_path / "imgs"
    root.mkdir()
    for name, cap in [("k", "A red kite flies high."), ("b", "A blue boat floats."), ("n", "Nothing here at all.")]:
        Image.new("RGB", (32, 32)).save(root / f"{name}.png")
        (root / f"{name}.txt").write_text(cap)
    cfg = load_annotate_config(None, ["boxes.backend=openai", "negatives.backend=llm", "endpoint.max_retries=1",
                                      f"endpoint.base_url={openai_server.url}", "endpoint.backoff_base_s=0.01",
                                      "negatives.max_attempts=1"])
    summary = Annotator(cfg, str(root), str(tmp_path / "out")).run(progress=False)
    assert (summary.images, summary.records, summary.quarantined) == (3, 2, 1)
    [q] = read_quarantine(str(tmp_path / "out"))
    assert (q["f_path"], q["stage"]) == ("k.png", "negatives") and "HTTP 500" in q["reason"]
    assert q["record"]["bbox_info"][0]["short_expr"] == "a red kite"
    kept = {r.f_path: r for r in read_records(str(tmp_path / "out"))}
    # the boat's LLM answer had no valid negative (not an error): all 10 are rule-based, and counted
    [boat] = kept["b.png"].bbox_info
    assert (boat.short_expr, boat.flag_short_neg, len(boat.short_expr_negs)) == ("a blue boat", 1, 10)
    assert boat.provenance["short_expr_negs"]["checks"] == {"rejected": 1, "replaced": 10}
    assert kept["n.png"].bbox_info == []
