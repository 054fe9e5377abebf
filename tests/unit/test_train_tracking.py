"""Tracking never stops training: an unreachable server degrades to the local JSONL copy."""

from __future__ import annotations

import json
import logging
import socket

from fgclip_core.train.tracking import Tracker, flatten


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_warns_and_keeps_a_local_copy(tmp_path, caplog, monkeypatch) -> None:
    import fgclip_core.train.tracking as tracking

    probes = []
    real_probe = tracking.probe
    monkeypatch.setattr(tracking, "probe", lambda uri, timeout: probes.append(uri) or real_probe(uri, timeout))
    t = Tracker(tmp_path, uri=f"http://127.0.0.1:{_closed_port()}", system_metrics=False)
    with caplog.at_level(logging.WARNING):
        t.start({"optim": {"lr": 1e-3}}, {"k": "v"})
        t.log_metrics({"loss": 1.5}, step=1)
        t.log_metrics({"loss": 1.25}, step=2)
        t.log_artifact(tmp_path / "tracking" / "params.json")
        t.end()
    # the server is asked once; after that every call stays local (no per-step retries slowing training)
    assert len(probes) == 1 and len(t.failures) == 1
    assert "not reachable" in caplog.text
    lines = [json.loads(x) for x in (tmp_path / "tracking" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["step"], x["loss"]) for x in lines] == [(1, 1.5), (2, 1.25)]
    assert json.loads((tmp_path / "tracking" / "params.json").read_text()) == {"optim": {"lr": 1e-3}}
    assert t.failures and t.run_id is None


def test_default_sqlite_store_records_params_metrics_and_resumes_the_same_run(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    t = Tracker(tmp_path, system_metrics=False)
    t.start({"optim": {"lr": 0.001, "betas": [0.9, 0.98]}, "stage": 2}, {"fgclip.stage": "2"})
    t.log_metrics({"loss": 2.0}, step=1)
    t.end()
    assert t.uri.startswith("sqlite:///") and (tmp_path / "mlflow.db").is_file()
    again = Tracker(tmp_path, system_metrics=False)
    again.start({"stage": 2}, {})
    again.log_metrics({"loss": 1.0}, step=2)
    again.end()
    assert again.run_id == t.run_id

    from mlflow.tracking import MlflowClient

    run = MlflowClient(t.uri).get_run(t.run_id)
    assert run.data.params["optim.lr"] == "0.001" and run.data.params["optim.betas"] == "[0.9, 0.98]"
    assert run.data.tags["fgclip.stage"] == "2"
    history = MlflowClient(t.uri).get_metric_history(t.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0)]


def test_flatten_nested_config() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": "1", "a.c.d": "[1, 2]", "e": "None"}


class _FailingClient:
    def __init__(self) -> None:
        self.calls = 0

    def log_batch(self, *a, **k) -> None:
        self.calls += 1
        raise ConnectionError("server went away")


def test_server_failing_mid_run_is_switched_off_once_and_training_data_stays_local(tmp_path, caplog) -> None:
    t = Tracker(tmp_path, uri="http://127.0.0.1:1", system_metrics=False)
    client = _FailingClient()
    t.client, t.run_id = client, "r1"
    with caplog.at_level(logging.WARNING):
        for step in range(1, 4):
            t.log_metrics({"loss": float(step)}, step=step)
    assert client.calls == 1 and t.client is None
    assert caplog.text.count("server went away") == 1
    steps = [json.loads(x)["step"] for x in (tmp_path / "tracking" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
