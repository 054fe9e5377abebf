"""Model side of the code location: wiring (refs, partition mapping, pool, retries, jobs), the
evaluation gate on an EvalRef, MLflow links without credentials, the loss curve, version retention."""

import math
import os

import pytest
from dagster import AllPartitionMapping, AssetKey, build_asset_check_context

from assets.model_metadata import loss_curve_markdown, mlflow_links, read_loss_curve
from assets.training import select_shards
from orchestration.definitions import defs
from orchestration.model_checks import MetricsGateConfig, evaluation_metrics_finite
from orchestration.model_resources import TrainingResource
from orchestration.refs import EvalRef, ShardSetRef
from orchestration.versions import MARKER, OutputStoreResource

K = AssetKey


def test_model_assets_hand_refs_on_and_trained_model_reads_every_partition():
    g = defs.resolve_asset_graph()
    for name in ["base_checkpoint", "trained_model", "eval_benchmarks", "evaluation"]:
        assert g.get(K(name)).io_manager_key == "ref_io_manager", name
    trained = g.get(K("trained_model"))
    assert trained.pools == {"training"} and trained.partitions_def is None
    assert isinstance(trained.assets_def.get_partition_mapping(K("training_shards")), AllPartitionMapping)
    assert trained.assets_def.op.retry_policy.max_retries == 2
    assert trained.automation_condition is not None
    parents = {n: {p.path[-1] for p in g.get(K(n)).parent_keys}
               for n in ["trained_model", "evaluation", "registered_model", "eval_benchmarks", "base_checkpoint"]}
    assert parents == {"trained_model": {"training_shards", "base_checkpoint"},
                       "evaluation": {"trained_model", "base_checkpoint", "eval_benchmarks"},
                       "registered_model": {"trained_model", "evaluation"},
                       "eval_benchmarks": set(), "base_checkpoint": set()}


def test_jobs_select_what_they_name():
    def keys(job):
        return {k.path[-1] for k in defs.resolve_job_def(job).asset_layer.executable_asset_keys}

    assert keys("retrain") == {"trained_model", "evaluation", "registered_model"}
    assert keys("fgclip_pipeline") == {k.path[-1] for k in defs.resolve_asset_graph().get_all_asset_keys()}
    ops = {n.name for n in defs.resolve_job_def("evaluate_champion").nodes}
    assert ops == {"evaluate_current_champion"}
    assert defs.resolve_schedule_def("retrain_schedule").job_name == "retrain"


def _shard_ref(p, samples=4):
    return ShardSetRef(uri=f"/d/{p}", sha256=f"m-{p}", partition=p, manifest_uri=f"/d/{p}/manifest.json",
                       samples=samples, shards=1)


def test_select_shards_all_or_named_and_empty_refused():
    refs = {"b2": _shard_ref("b2"), "b1": _shard_ref("b1"), "b3": _shard_ref("b3", samples=0)}
    assert list(select_shards(refs, None)) == ["b1", "b2"]        # sorted, empty batch left out
    assert list(select_shards(refs, ["b2"])) == ["b2"]
    with pytest.raises(ValueError, match=r"\['b9'\]"):
        select_shards(refs, ["b2", "b9"])
    with pytest.raises(ValueError, match="no training_shards partition with samples"):
        select_shards({"b3": refs["b3"]}, None)


def test_training_command_takes_every_shard_set():
    cmd = TrainingResource().command(["/d/a", "/d/b"], "/o", "/i")
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--data"] == ["/d/a", "/d/b"]


@pytest.mark.parametrize(("metrics", "passed"), [
    ({"fgovd-sample/accuracy": 0.5, "coco-sample/i2t_R@1": 0.25}, True),
    ({"fgovd-sample/accuracy": 0.5, "coco-sample/i2t_R@1": math.nan}, False),
    ({"fgovd-sample/accuracy": math.inf}, False),
    ({"coco-sample/i2t_R@1": 0.25}, False),  # the primary metric is missing
    ({}, False),
])
def test_metrics_gate_on_the_evaluation_ref(metrics, passed):
    ref = EvalRef(uri="/e", sha256="s", metrics=metrics, benchmarks_sha256="b")
    r = evaluation_metrics_finite(context=build_asset_check_context(), config=MetricsGateConfig(), evaluation=ref)
    assert r.passed is passed


def test_mlflow_links_never_carry_credentials(monkeypatch):
    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    assert mlflow_links("sqlite:////tmp/m.db", experiment_id="1", run_id="r") == {}   # no UI known
    links = mlflow_links("https://alice:s3cret@mlflow.example", experiment_id="3", run_id="abc",
                         model=("fgclip", "2"))
    urls = {k: v.value for k, v in links.items()}
    assert urls == {"mlflow_experiment_url": "https://mlflow.example/#/experiments/3",
                    "mlflow_run_url": "https://mlflow.example/#/experiments/3/runs/abc",
                    "mlflow_model_version_url": "https://mlflow.example/#/models/fgclip/versions/2"}
    monkeypatch.setenv("MLFLOW_UI_URL", "http://127.0.0.1:5000/")
    assert mlflow_links("sqlite:////tmp/m.db", experiment_id="1")["mlflow_experiment_url"].value == \
        "http://127.0.0.1:5000/#/experiments/1"


def test_loss_curve_is_an_embedded_png(tmp_path):
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1, "loss": 2.5}\nnot json\n{"step": 2, "loss": 2.0, "lr_group0": 1e-4}\n{"step": 2}\n')
    points = read_loss_curve(f)
    assert points == [(1, 2.5), (2, 2.0)]
    md = loss_curve_markdown(points)
    assert md.startswith("![training loss](data:image/png;base64,iVBOR") and "2: 2.0000" in md
    assert loss_curve_markdown([]) == "no loss values were logged"


def test_versioned_folders_are_fresh_and_retention_spares_protected_and_foreign(tmp_path):
    store = OutputStoreResource(root=str(tmp_path), keep=2)
    dirs = []
    for i in range(4):
        d = store.new_dir("trained_model", f"run{i}")
        os.utime(d, (1000 + i, 1000 + i))
        dirs.append(d)
    assert (dirs[0] / MARKER).is_file()
    with pytest.raises(FileExistsError):
        store.new_dir("trained_model", "run0")
    assert store.new_dir("trained_model", "run0", retry=1).name == "run0-retry1"
    os.utime(tmp_path / "trained_model" / "run0-retry1", (2000, 2000))
    foreign = tmp_path / "trained_model" / "someone-elses"
    foreign.mkdir()
    removed = store.prune("trained_model", protect={str(dirs[0] / "run" / "export")})
    assert sorted(p.name for p in removed) == ["run1", "run2"]
    assert sorted(p.name for p in (tmp_path / "trained_model").iterdir()) == ["run0", "run0-retry1", "run3",
                                                                              "someone-elses"]
