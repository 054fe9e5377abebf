"""Dagster Pipes reporting: rank 0 only, only under a Pipes launch, through the real client library."""

from __future__ import annotations

import json

from dagster_pipes import encode_param

from fgclip_core.train.pipes import PipesReporter


def _pipes_env(monkeypatch, messages) -> None:
    context = {"asset_keys": ["trained_model"], "code_version_by_asset_key": None, "provenance_by_asset_key": None,
               "partition_key": None, "partition_key_range": None, "partition_time_window": None,
               "run_id": "run-1", "job_name": None, "retry_number": 0, "extras": {}}
    monkeypatch.setenv("DAGSTER_PIPES_CONTEXT", encode_param({"data": context}))
    monkeypatch.setenv("DAGSTER_PIPES_MESSAGES", encode_param({"path": str(messages)}))


def test_rank0_reports_log_and_materialization_metadata(tmp_path, monkeypatch) -> None:
    messages = tmp_path / "messages.jsonl"
    _pipes_env(monkeypatch, messages)
    assert PipesReporter.open(rank=1).ctx is None
    r = PipesReporter.open(rank=0)
    assert r.ctx is not None
    r.log("step 1/3")
    r.report_materialization({"steps": 3, "final_loss": 0.25, "export_dir": "/runs/x/export", "run_id": None,
                              "tracking_failures": ["MLflow down"]})
    r.close()
    msgs = [json.loads(line) for line in messages.read_text().splitlines()]
    methods = [m["method"] for m in msgs]
    assert methods[0] == "opened" and methods[-1] == "closed" and "report_asset_materialization" in methods
    mat = next(m for m in msgs if m["method"] == "report_asset_materialization")
    meta = {k: v["raw_value"] for k, v in mat["params"]["metadata"].items()}
    assert meta == {"steps": 3, "final_loss": 0.25, "export_dir": "/runs/x/export",
                    "tracking_failures": '["MLflow down"]'}


def test_without_a_pipes_launch_everything_is_a_no_op(monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_PIPES_CONTEXT", raising=False)
    r = PipesReporter.open(rank=0)
    assert r.ctx is None
    r.log("x")
    r.report_materialization({"steps": 1})
    r.close()
