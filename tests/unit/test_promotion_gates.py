"""Gated promotion against a local SQLite MLflow registry: champion moves only when every gate passes;
each gate failing on its own keeps the old champion; the decision and every gate land in version tags.

Versions are created directly in the registry (no model files): the gates read only tags and aliases."""

from __future__ import annotations

import json
import math

import pytest
from mlflow import MlflowClient

from fgclip_core.promotion import Gates, evaluate_gates, gate_table_markdown
from fgclip_core.registry import (
    CHAMPION,
    DECISION_TAG,
    GATES_TAG,
    champion_version,
    metrics_on_benchmarks,
    promote_gated,
    record_benchmark_metrics,
)

NAME = "fgclip-gates"
BENCH = "b" * 64
GATES = Gates(primary_metric="fgovd/accuracy", min_delta=0.01, minimums={"fgovd/accuracy": 0.3, "coco/R1": 0.1},
              max_regression={"coco/R1": 0.02})
GOOD = {"fgovd/accuracy": 0.5, "coco/R1": 0.3}


@pytest.fixture()
def uri(tmp_path):
    return f"sqlite:///{tmp_path}/mlflow.db"


def _version(uri: str, metrics: dict[str, float], bench: str = BENCH) -> str:
    client = MlflowClient(uri)
    if not client.search_registered_models(f"name='{NAME}'"):
        client.create_registered_model(NAME)
    v = str(client.create_model_version(NAME, source="file:///nowhere/model").version)
    record_benchmark_metrics(NAME, v, bench, metrics, tracking_uri=uri)
    return v


def _promote(uri, v, metrics, **kw):
    return promote_gated(NAME, v, metrics, GATES, benchmarks_sha256=BENCH, tracking_uri=uri, **kw)


def test_first_model_becomes_champion_only_through_the_absolute_gates(uri):
    v1 = _version(uri, {"fgovd/accuracy": 0.2, "coco/R1": 0.3})
    d = _promote(uri, v1, {"fgovd/accuracy": 0.2, "coco/R1": 0.3})
    assert not d.promoted and champion_version(NAME, uri) is None
    assert [(r.gate, r.metric) for r in d.gates if not r.passed] == [("minimum", "fgovd/accuracy")]
    v2 = _version(uri, GOOD)
    d = _promote(uri, v2, GOOD)
    assert d.promoted and champion_version(NAME, uri) == v2 and "first champion" in d.decision
    tags = MlflowClient(uri).get_model_version(NAME, v2).tags
    assert tags[DECISION_TAG] == d.decision
    assert {g["gate"] for g in json.loads(tags[GATES_TAG])} == {"minimum", "primary"}
    assert tags["gate.minimum.fgovd/accuracy"] == "pass"


@pytest.mark.parametrize(("challenger", "failing"), [
    ({"fgovd/accuracy": 0.6, "coco/R1": 0.05}, {("minimum", "coco/R1"), ("no_regression", "coco/R1")}),
    ({"fgovd/accuracy": 0.6, "coco/R1": 0.27}, {("no_regression", "coco/R1")}),         # drop 0.03 > 0.02
    ({"fgovd/accuracy": 0.505, "coco/R1": 0.3}, {("primary", "fgovd/accuracy")}),       # gain 0.005 <= 0.01
    ({"fgovd/accuracy": 0.6, "coco/R1": math.nan}, {("minimum", "coco/R1"), ("no_regression", "coco/R1")}),
    ({"coco/R1": 0.3}, {("minimum", "fgovd/accuracy"), ("primary", "fgovd/accuracy")}),  # metric missing
])
def test_each_failing_gate_keeps_the_champion(uri, challenger, failing):
    v1 = _version(uri, GOOD)
    assert _promote(uri, v1, GOOD).promoted
    v2 = _version(uri, challenger)
    d = _promote(uri, v2, challenger)
    assert not d.promoted and champion_version(NAME, uri) == v1
    assert {(r.gate, r.metric) for r in d.gates if not r.passed} == failing
    assert f"v{v1} stays champion" in d.decision
    tags = MlflowClient(uri).get_model_version(NAME, v2).tags
    for gate, metric in failing:
        assert tags[f"gate.{gate}.{metric}"].startswith("fail")


def test_every_gate_passing_moves_the_champion_within_tolerance(uri):
    v1 = _version(uri, GOOD)
    _promote(uri, v1, GOOD)
    better = {"fgovd/accuracy": 0.52, "coco/R1": 0.285}   # primary +0.02, coco -0.015 within 0.02
    v2 = _version(uri, better)
    d = _promote(uri, v2, better)
    assert d.promoted and champion_version(NAME, uri) == v2 and f"replaces v{v1}" in d.decision
    assert all(r.passed for r in d.gates) and len(d.gates) == 4
    assert "| primary | fgovd/accuracy | 0.5200 | 0.5000 |" in d.table


def test_champion_on_other_benchmarks_is_not_compared_unless_re_evaluated(uri):
    v1 = _version(uri, GOOD, bench="c" * 64)   # the champion was measured on an older benchmark set
    MlflowClient(uri).set_registered_model_alias(NAME, CHAMPION, v1)
    better = {"fgovd/accuracy": 0.9, "coco/R1": 0.9}
    v2 = _version(uri, better)
    d = _promote(uri, v2, better)
    assert not d.promoted and champion_version(NAME, uri) == v1
    assert {r.detail for r in d.gates if not r.passed} == {"champion not evaluated on these benchmark versions"}
    # re-evaluated on the current benchmarks, the champion is compared (and here beaten)
    assert metrics_on_benchmarks(NAME, v1, BENCH, uri) is None
    d = _promote(uri, v2, better, champion_metrics=GOOD)
    assert d.promoted and champion_version(NAME, uri) == v2


def test_lower_is_better_metrics_and_bad_tolerances():
    g = Gates(primary_metric="loss", min_delta=0.0, lower_is_better=["loss"], minimums={"loss": 1.0})
    res = evaluate_gates(g, {"loss": 0.5}, {"loss": 0.7}, has_champion=True)
    assert all(r.passed for r in res)
    res = evaluate_gates(g, {"loss": 1.5}, {"loss": 0.7}, has_champion=True)
    assert [r.passed for r in res] == [False, False]
    assert "**no**" in gate_table_markdown(res)
    with pytest.raises(ValueError, match="tolerances"):
        Gates(max_regression={"x": -0.1})
