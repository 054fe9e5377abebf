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
from orchestration.resources import WorkspaceResource


@pytest.fixture()
def ws(tmp_path):
    return WorkspaceResource(base_dir=str(tmp_path))


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(("total", "quarantined", "max_ratio", "passed"),
                         [(10, 1, 0.2, True), (10, 2, 0.2, True), (10, 3, 0.2, False), (10, 1, 0.05, False),
                          (0, 0, 0.2, False)])
def test_quarantine_gate(ws, total, quarantined, max_ratio, passed):
    _write(ws.local_path("validated", "summary.json"), {"total": total, "kept": total - quarantined,
                                                        "quarantined": quarantined})
    r = quarantine_ratio_below_threshold(context=build_asset_check_context(),
                                         config=QuarantineGateConfig(max_quarantine_ratio=max_ratio), workspace=ws)
    assert r.passed is passed
    if total:
        assert r.metadata["quarantine_ratio"].value == pytest.approx(quarantined / total)


def _shards(url: str) -> None:
    with ShardWriter(url, 2) as w:
        for i in range(3):
            w.add(f"s{i}", b"\xff\xd8 not really a jpeg " + bytes([i]), {"id": f"s{i}"})
    write_manifest(url, w.shards, 2)


def test_manifest_gate(ws):
    check = lambda: shards_manifest_verifies(context=build_asset_check_context(), workspace=ws)  # noqa: E731
    r = check()
    assert not r.passed and "no manifest" in r.metadata["problem"].value
    _shards(ws.url("shards"))
    r = check()
    assert r.passed and r.metadata["shards"].value == 2 and r.metadata["samples"].value == 3
    shard = ws.local_path("shards", "shard-000000.tar")
    shard.write_bytes(shard.read_bytes() + b"x")
    r = check()
    assert not r.passed and r.metadata["problem_count"].value == 1


def test_metrics_markdown_has_model_baseline_and_delta():
    res = SimpleNamespace(benchmark="fgovd-sample", metrics={"accuracy": 0.5})
    base = SimpleNamespace(benchmark="fgovd-sample", metrics={"accuracy": 0.25})
    md = metrics_markdown([(res, base), (res, None)], champion={"fgovd-sample/accuracy": 0.75})
    assert "| fgovd-sample | accuracy | 50.00 | 25.00 | +25.00 | 75.00 | -25.00 |" in md
    assert "| fgovd-sample | accuracy | 50.00 | - | - | 75.00 | -25.00 |" in md
    assert "| fgovd-sample | accuracy | 50.00 | - | - | - | - |" in metrics_markdown([(res, None)])
