"""The blocking gates on fabricated outputs (direct invocation, no run): pass, and each way to fail."""

import json
from types import SimpleNamespace

import pytest
from dagster import build_asset_check_context

from assets.evaluation import metrics_markdown
from fgclip_core.data.shards import ShardWriter, write_manifest
from orchestration.checks import (
    QuarantineGateConfig,
    quarantine_ratio_below_threshold,
    shards_manifest_verifies,
)
from orchestration.refs import RecordsRef, ShardSetRef


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(("total", "quarantined", "max_ratio", "passed"),
                         [(10, 1, 0.2, True), (10, 2, 0.2, True), (10, 3, 0.2, False), (10, 1, 0.05, False),
                          (0, 0, 0.2, False)])
def test_quarantine_gate(total, quarantined, max_ratio, passed):
    ref = RecordsRef(uri="/d/v", sha256="x", partition="b1", images_uri="/d/raw",
                     counts={"in": total, "out": total - quarantined, "batch_images": total,
                             "batch_quarantined": quarantined})
    r = quarantine_ratio_below_threshold(context=build_asset_check_context(),
                                         config=QuarantineGateConfig(max_quarantine_ratio=max_ratio),
                                         validated_records=ref)
    assert r.passed is passed
    if total:
        assert r.metadata["quarantine_ratio"].value == pytest.approx(quarantined / total)


def _shards(url: str):
    with ShardWriter(url, 2) as w:
        for i in range(3):
            w.add(f"s{i}", b"\xff\xd8 not really a jpeg " + bytes([i]), {"id": f"s{i}"})
    return write_manifest(url, w.shards, 2)


def test_manifest_gate(tmp_path):
    url = str(tmp_path / "shards")

    def check(sha="x"):
        ref = ShardSetRef(uri=url, sha256=sha, manifest_uri=f"{url}/manifest.json", samples=3, shards=2)
        return shards_manifest_verifies(context=build_asset_check_context(), training_shards=ref)

    r = check()
    assert not r.passed and "no manifest" in r.metadata["problem"].value
    manifest = _shards(url)
    r = check(manifest.manifest_sha256)
    assert r.passed and r.metadata["shards"].value == 2 and r.metadata["samples"].value == 3
    r = check("another manifest")
    assert not r.passed and r.metadata["problem_count"].value == 1
    shard = tmp_path / "shards" / manifest.shards[0].name
    shard.write_bytes(shard.read_bytes() + b"x")
    r = check(manifest.manifest_sha256)
    assert not r.passed and r.metadata["problem_count"].value == 1


def test_metrics_markdown_has_model_baseline_and_delta():
    res = SimpleNamespace(benchmark="fgovd-sample", metrics={"accuracy": 0.5})
    base = SimpleNamespace(benchmark="fgovd-sample", metrics={"accuracy": 0.25})
    md = metrics_markdown([(res, base), (res, None)], champion={"fgovd-sample/accuracy": 0.75})
    assert "| fgovd-sample | accuracy | 50.00 | 25.00 | +25.00 | 75.00 | -25.00 |" in md
    assert "| fgovd-sample | accuracy | 50.00 | - | - | 75.00 | -25.00 |" in md
    assert "| fgovd-sample | accuracy | 50.00 | - | - | - | - |" in metrics_markdown([(res, None)])
