"""The model side of the Dagster graph in-process on tiny data: a stand-in partitioned training_shards
(two sample batches), real tiny training in a subprocess (Pipes), evaluation, gated registration in a
SQLite MLflow store; then a second batch and a retrain on both; and two trainings at once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, instance_for_test, materialize
from mlflow import MlflowClient

from assets.evaluation import eval_benchmarks, evaluation
from assets.registry import registered_model
from assets.training import base_checkpoint, trained_model
from orchestration.definitions import make_resources
from orchestration.model_checks import evaluation_metrics_finite
from orchestration.model_jobs import evaluate_champion_job
from orchestration.model_resources import TrainingResource
from tests.dagster_standins import real_shards_asset

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# DeepSpeed's compiled ops: the one cache the environment names (Makefile, CI), else this checkout's
TORCH_EXTENSIONS = os.environ.get("TORCH_EXTENSIONS_DIR") or str(REPO / ".fgclip" / "torch_extensions")
STEPS = 2
MODEL = [base_checkpoint, trained_model, eval_benchmarks, evaluation, registered_model]


@pytest.fixture(autouse=True)
def _restore_mlflow_tracking_uri(monkeypatch):
    # register_checkpoint sets the process-wide tracking URI; give later tests back the one they had
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)


@pytest.fixture()
def env(tmp_path, monkeypatch, sample_set):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # nothing may land in the working directory (MLflow's ./mlruns default)
    training = TrainingResource(max_steps=STEPS, nproc=1, save_every=0,
                                torch_extensions_dir=TORCH_EXTENSIONS)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    resources = make_resources(training=training, tracking_uri=uri, data_url=str(tmp_path / "data"))
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("image_batches", ["batch-a", "batch-b"])
        yield {"instance": instance, "resources": resources, "shards": real_shards_asset(sample_set),
               "uri": uri, "data": tmp_path / "data", "cwd": cwd}


def _meta(result, name: str) -> dict:
    (mat,) = result.asset_materializations_for_node(name)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _land(env, batch):
    r = materialize([env["shards"]], partition_key=batch, instance=env["instance"], resources=env["resources"])
    assert r.success
    return _meta(r, "training_shards")["manifest_sha256"]


# the first version must be able to become champion whatever a 2-step model scores
GATES = {"ops": {"registered_model": {"config": {"minimums": {"fgovd-sample/accuracy": 0.0}}}}}


def _run(env, selection):
    r = materialize([env["shards"], *MODEL, evaluation_metrics_finite], selection=selection,
                    instance=env["instance"], resources=env["resources"], raise_on_error=False, run_config=GATES)
    assert r.success, [e.message for e in r.all_events if e.is_failure]
    return r


def test_model_side_trains_on_every_batch_evaluates_and_registers_with_lineage(env):
    sha_a = _land(env, "batch-a")
    r1 = _run(env, [a.key for a in MODEL])
    t1, ev1, reg1 = _meta(r1, "trained_model"), _meta(r1, "evaluation"), _meta(r1, "registered_model")
    assert t1["steps"] == STEPS and t1["partitions"] == ["batch-a"] and t1["samples_in_shards"] == 7
    assert json.loads(t1["shard_manifests"]) == {"batch-a": sha_a}
    assert Path(t1["export_dir"]).is_relative_to(env["data"] / "trained_model" / r1.run_id)
    assert t1["loss_curve"].startswith("![training loss](data:image/png;base64,")
    assert "| fgovd-sample | accuracy |" in ev1["metrics"] and ev1["non_finite_metrics"] == 0
    assert ev1["report_image"].startswith("![evaluation report](data:image/png;base64,")
    checks = {e.check_name: e.passed for e in r1.get_asset_check_evaluations()}
    assert checks == {"evaluation_metrics_finite": True}

    client = MlflowClient(env["uri"])
    v1 = client.get_model_version("fgclip", reg1["version"])
    assert str(client.get_model_version_by_alias("fgclip", "challenger").version) == reg1["version"] == "1"
    tags = v1.tags
    assert tags["dagster.run_id"] == r1.run_id and tags["fgclip.training_dagster_run_id"] == r1.run_id
    assert tags["fgclip.shard_manifests"] == t1["shard_manifests"] == reg1["shard_manifests"]
    assert tags["fgclip.partitions"] == '["batch-a"]'
    assert tags["fgclip.base_checkpoint_sha256"] == t1["base_checkpoint_sha256"] == reg1["base_checkpoint_sha256"]
    assert tags["fgclip.code_version"] and tags["promotion.decision"] == reg1["decision"]
    assert "| minimum | fgovd-sample/accuracy |" in reg1["gates"]
    assert tags["gate.minimum.fgovd-sample/accuracy"] == "pass"
    assert reg1["promoted"] is True and reg1["champion_now"] == "1"
    # evaluation runs: in the named experiment, with the lineage tags
    (eval_run,) = client.search_runs([client.get_experiment_by_name("fgclip-eval").experiment_id])
    assert eval_run.info.run_id == ev1["mlflow_run_id"] == tags["fgclip.eval_run_id"]
    assert eval_run.data.tags["dagster.run_id"] == r1.run_id
    assert eval_run.data.tags["fgclip.shard_manifests"] == t1["shard_manifests"]
    train_run = client.get_run(t1["mlflow_run_id"])
    assert train_run.data.tags["fgclip.shard_manifests"] == t1["shard_manifests"]

    # the second batch lands: retrain on both, version 2 registered and gated
    sha_b = _land(env, "batch-b")
    r2 = _run(env, [AssetKey("trained_model"), AssetKey("evaluation"), AssetKey("registered_model")])
    t2, reg2 = _meta(r2, "trained_model"), _meta(r2, "registered_model")
    assert t2["partitions"] == ["batch-a", "batch-b"] and t2["samples_in_shards"] == 13
    assert json.loads(t2["shard_manifests"]) == {"batch-a": sha_a, "batch-b": sha_b}
    assert reg2["version"] == "2" and reg2["champion_version"] == "1"
    assert str(client.get_model_version_by_alias("fgclip", "challenger").version) == "2"
    v2_tags = client.get_model_version("fgclip", "2").tags
    assert v2_tags["promotion.decision"] == reg2["decision"]
    gates = json.loads(v2_tags["promotion.gates"])
    assert {g["gate"] for g in gates} == {"minimum", "no_regression", "primary"}
    assert reg2["promoted"] is all(g["passed"] for g in gates)   # champion moves only when every gate passes
    assert reg2["champion_now"] == ("2" if reg2["promoted"] else "1")
    # the champion was compared on the same benchmark set: its metrics for that hash are the reference
    primary = next(g for g in gates if g["gate"] == "primary")
    assert primary["reference"] == pytest.approx(ev1_metrics_primary(client, reg1["version"], ev1))

    # evaluate_champion: the current champion on the current benchmark set, recorded on its version
    champ = reg2["champion_now"]
    ec = evaluate_champion_job.execute_in_process(instance=env["instance"], resources=env["resources"])
    assert ec.success
    (obs,) = [e for e in ec.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert obs.event_specific_data.asset_observation.metadata["champion_version"].value == champ
    runs = client.search_runs([client.get_experiment_by_name("fgclip-eval").experiment_id],
                              filter_string="tags.`fgclip.role` = 'champion'")
    assert len(runs) == 1 and runs[0].data.tags["fgclip.model_version"] == champ
    # both trainings' folders are kept (retention keeps 5), each under its own run id
    assert Path(t1["export_dir"], "config.json").is_file() and Path(t2["export_dir"], "config.json").is_file()
    assert not list(env["cwd"].iterdir()), "files written into the working directory"


def ev1_metrics_primary(client, version, ev1) -> float:
    tag = f"fgclip.eval.{ev1['benchmarks_sha256'][:16]}"
    return json.loads(client.get_model_version("fgclip", version).tags[tag])["fgovd-sample/accuracy"]


def test_two_concurrent_trainings_both_succeed_in_separate_folders(tmp_path, monkeypatch, sample_set):
    """Two run processes (as two Dagster run workers) materialise trained_model at the same time on one
    instance, one data root and one MLflow store: both succeed, each in its own folder."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    data, uri = tmp_path / "data", f"sqlite:///{tmp_path / 'mlflow.db'}"
    resources = make_resources(tracking_uri=uri, data_url=str(data))
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("image_batches", ["batch-a"])
        assert materialize([real_shards_asset(sample_set)], partition_key="batch-a", instance=instance,
                           resources=resources).success
        assert materialize([base_checkpoint], instance=instance, resources=resources).success
    env = {**os.environ, "PYTHONPATH": str(REPO), "DAGSTER_HOME": str(home), "OMP_NUM_THREADS": "1",
           "TORCH_EXTENSIONS_DIR": TORCH_EXTENSIONS}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "tests.integration.dagster_train_run", str(home), str(data), uri, str(STEPS)]
    # output to files, not pipes: a run blocked on a full pipe would hold the instance's SQLite lock
    logs = [(tmp_path / f"run{i}.out", tmp_path / f"run{i}.err") for i in range(2)]
    procs = []
    for out, err in logs:
        with out.open("w") as o, err.open("w") as e:
            procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=o, stderr=e, text=True))
    outs = []
    for p, (out, err) in zip(procs, logs, strict=True):
        p.wait(timeout=1200)
        assert p.returncode == 0, out.read_text()[-3000:] + err.read_text()[-3000:]
        outs.append(json.loads(out.read_text().strip().splitlines()[-1]))
    assert all(o["success"] for o in outs)
    assert outs[0]["run_id"] != outs[1]["run_id"] and outs[0]["export_dir"] != outs[1]["export_dir"]
    for o in outs:
        path = Path(o["export_dir"])
        assert path.is_relative_to(data / "trained_model" / o["run_id"])
        assert (path / "config.json").is_file() and (path.parent / "summary.json").is_file()
