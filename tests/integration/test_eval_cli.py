"""`fgclip eval` end to end with a real (tiny, random) FG-CLIP checkpoint on the bundled sample photos."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from fgclip_core.cli import cli
from fgclip_core.eval import sample_benchmarks as L
from fgclip_core.eval.encoder import FGCLIPEncoder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory) -> Path:
    from fgclip_core.model.build import init_checkpoint

    return init_checkpoint("tiny", tmp_path_factory.mktemp("fgclip_tiny_baseline"), seed=1)


@pytest.fixture(scope="module")
def bench(sample_set, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench")
    L.write_fgovd(sample_set, root / "fgovd.jsonl", negatives=5)
    L.write_sharegpt4v(sample_set, root / "share4v.json")
    L.write_coco_captions(sample_set, root / "captions_val2017.json")
    L.write_image_folder(sample_set, root / "val")
    L.write_coco_instances(sample_set, root / "instances_val2017.json")
    return {"root": root}


def invoke(*args: str):
    result = CliRunner().invoke(cli, ["eval", *args], catch_exceptions=False)
    return result


def test_fgovd_with_baseline_writes_metrics_details_and_report(tiny_checkpoint_dir, baseline_dir, bench,
                                                               sample_set, tmp_path):
    out = tmp_path / "out"
    r = invoke("fgovd", "--model", str(tiny_checkpoint_dir), "--data", str(bench["root"] / "fgovd.jsonl"),
               "--images", str(sample_set.images_root), "--output", str(out), "--baseline", str(baseline_dir),
               "--no-progress")
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    n_items = sum(len(rec.bbox_info) for rec in sample_set.records)
    assert metrics["suite"] == "fgovd" and metrics["n"] == n_items
    assert set(metrics["metrics"]) == {"accuracy"} and 0.0 <= metrics["metrics"]["accuracy"] <= 1.0
    details = [json.loads(x) for x in (out / "details.jsonl").read_text().splitlines()]
    assert len(details) == n_items and all(len(d["negative_scores"]) == 5 for d in details)
    # The reported accuracy is what the per-item scores say (official preset: no negative above the
    # positive by more than the tie precision).
    assert metrics["protocol"] == {"name": "official", "settings": {"ties": "optimistic", "tie_tol": 1e-6}}
    assert metrics["metrics"]["accuracy"] == pytest.approx(
        sum(max(d["negative_scores"]) <= d["positive_score"] + 1e-6 for d in details) / n_items)
    assert (out / "baseline" / "metrics.json").exists()
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "data:image/jpeg;base64," in html
    assert "baseline" in html and str(baseline_dir) in html
    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert f"report: {out / 'report.html'}" in r.output


def test_long_retrieval_runs_and_cache_is_reused(tiny_checkpoint_dir, bench, sample_set, tmp_path):
    args = ["long-retrieval", "--model", str(tiny_checkpoint_dir), "--data", str(bench["root"] / "share4v.json"),
            "--images", str(sample_set.images_root), "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    r1 = invoke(*args, "--output", str(tmp_path / "a"))
    assert r1.exit_code == 0, r1.output
    r2 = invoke(*args, "--output", str(tmp_path / "b"))
    assert r2.exit_code == 0, r2.output
    m1 = json.loads((tmp_path / "a" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert m1["metrics"] == m2["metrics"]
    assert set(m1["metrics"]) == {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"}
    assert m1["n"] == len(sample_set.records)
    cache_files = sorted(p.name for p in (tmp_path / "cache").rglob("*.pt"))
    assert cache_files == ["image.pt", "text-long.pt"]


def test_all_from_yaml_with_mlflow(tiny_checkpoint_dir, bench, sample_set, tmp_path):
    root = bench["root"]
    images = str(sample_set.images_root)
    suite_file = root / "benchmarks.yaml"
    suite_file.write_text(yaml.safe_dump({
        "settings": {"batch_size": 8, "templates": "simple", "box_templates": "simple", "progress": False},
        "benchmarks": [
            {"name": "fgovd-hard", "suite": "fgovd", "data": "fgovd.jsonl", "images": images},
            {"name": "sharegpt4v", "suite": "long-retrieval", "data": "share4v.json"},
            {"name": "coco", "suite": "short-retrieval", "data": "captions_val2017.json"},
            {"name": "imagenet-like", "suite": "zeroshot", "data": "val"},
            {"name": "coco-boxes", "suite": "box-cls", "data": "instances_val2017.json"},
        ]}))
    out = tmp_path / "all"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = invoke("all", "--model", str(tiny_checkpoint_dir), "--data", str(suite_file), "--images", images,
               "--output", str(out), "--tracking-uri", uri)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["suite"] == "all"
    assert {"fgovd-hard/accuracy", "sharegpt4v/t2i_R@10", "coco/i2t_R@1", "imagenet-like/top5",
            "coco-boxes/top1"} <= set(summary["metrics"])
    for name in ("fgovd-hard", "sharegpt4v", "coco", "imagenet-like", "coco-boxes"):
        assert json.loads((out / name / "metrics.json").read_text())["benchmark"] == name
    coco = json.loads((out / "coco" / "metrics.json").read_text())
    assert coco["counts"]["texts"] == 5 * len(sample_set.records)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs(experiment_ids=["0"])
    assert len(runs) == 1
    logged = runs[0].data.metrics
    assert logged["eval/coco/i2t_R1"] == pytest.approx(summary["metrics"]["coco/i2t_R@1"])
    assert logged["eval/fgovd-hard/accuracy"] == pytest.approx(summary["metrics"]["fgovd-hard/accuracy"])
    arts = [a.path for a in client.list_artifacts(runs[0].info.run_id, "eval")]
    assert "eval/report.html" in arts
    # The preset and every setting are tags; read back they match the summary's records.
    from fgclip_core.eval.protocol import meta_from_tags, protocols_match

    tags = runs[0].data.tags
    assert tags["eval.coco.protocol"] == "official" and json.loads(tags["eval.coco.protocol.captions_per_image"]) == 5
    assert json.loads(tags["eval.fgovd-hard.protocol.ties"]) == "optimistic"
    assert protocols_match(meta_from_tags(tags), summary)

    # Inside an active run (e.g. a training or Dagster step), metrics go into that run, left open.
    import mlflow

    from fgclip_core.eval.tracking import log_to_mlflow

    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run() as run:
            run_id = log_to_mlflow({"eval/x/accuracy": 0.5}, [(out / "metrics.json", "eval")])
            assert run_id == run.info.run_id and mlflow.active_run().info.run_id == run_id
        assert client.get_run(run_id).data.metrics["eval/x/accuracy"] == 0.5
    finally:
        mlflow.set_tracking_uri(None)


def test_missing_benchmark_file_is_a_clear_cli_error(tiny_checkpoint_dir, tmp_path):
    r = CliRunner().invoke(cli, ["eval", "fgovd", "--model", str(tiny_checkpoint_dir), "--data",
                                 str(tmp_path / "absent.jsonl"), "--images", str(tmp_path), "--output",
                                 str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code != 0
    assert "absent.jsonl" in r.output and "not found" in r.output


def test_encoder_text_trimming_matches_full_length(tiny_checkpoint_dir):
    enc = FGCLIPEncoder(str(tiny_checkpoint_dir))
    texts = ["a red cup", "a much longer description of a small silver teaspoon leaning on a red cup"]
    for mode in ("short", "long"):
        ids = enc.tokenizer.encode(texts, mode=mode)
        full = enc.model.get_text_features(ids, walk_short_pos=(mode == "short"))
        torch.testing.assert_close(enc.encode_texts(texts, mode), full, rtol=1e-5, atol=1e-5)


def test_report_images_are_inline(tiny_checkpoint_dir, bench, sample_set, tmp_path):
    out = tmp_path / "zs"
    r = invoke("zeroshot", "--model", str(tiny_checkpoint_dir), "--data", str(bench["root"] / "val"),
               "--output", str(out), "--no-progress", "--set", "templates=simple")
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text()
    assert "src=\"http" not in html and "src=\"/" not in html
    b64 = html.split("data:image/jpeg;base64,", 1)[1].split('"', 1)[0]
    assert base64.b64decode(b64).startswith(b"\xff\xd8")  # a real JPEG thumbnail
