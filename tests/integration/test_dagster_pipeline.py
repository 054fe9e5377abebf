"""The whole Dagster pipeline in-process on the bundled sample: tmp workspace, SQLite MLflow store, a
few training steps in one subprocess; every asset materialized, every gate passed, the model
registered as challenger (and, as the first version, promoted to champion)."""

from pathlib import Path

import pytest
from dagster import materialize
from mlflow import MlflowClient

from orchestration.checks import ALL_CHECKS
from orchestration.definitions import ALL_ASSETS, make_resources
from orchestration.resources import TrainingResource, WorkspaceResource

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
STEPS = 3


@pytest.fixture(autouse=True)
def _restore_mlflow_tracking_uri(monkeypatch):
    # register_checkpoint sets the process-wide tracking URI; give later tests back the one they had
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)


def _meta(result, name: str) -> dict:
    (mat,) = result.asset_materializations_for_node(name)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


@pytest.fixture()
def pipeline_run(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # nothing may land in the working directory (MLflow's ./mlruns default)
    workspace = WorkspaceResource(base_dir=str(tmp_path / "ws"))
    training = TrainingResource(max_steps=STEPS, nproc=1,
                                torch_extensions_dir=str(REPO / ".fgclip" / "torch_extensions"))
    resources = make_resources(workspace, training)
    result = materialize([*ALL_ASSETS, *ALL_CHECKS], resources=resources, raise_on_error=False)
    return result, resources, tmp_path, cwd


def _rerun(resources):
    return materialize([*ALL_ASSETS, *ALL_CHECKS], resources=resources, raise_on_error=False)


def test_pipeline_materializes_every_asset_and_passes_the_gates(pipeline_run):
    result, resources, tmp_path, cwd = pipeline_run
    assert result.success, [e.message for e in result.all_events if e.is_failure]

    for a in ALL_ASSETS:
        assert len(result.asset_materializations_for_node(a.key.path[-1])) == 1, a.key

    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"quarantine_ratio_below_threshold": True, "shards_manifest_verifies": True,
                      "evaluation_metrics_finite": True}

    assert _meta(result, "raw_images")["images"] == 13
    annotated = _meta(result, "annotated_records")
    assert (annotated["images"], annotated["records"], annotated["quarantined"]) == (13, 13, 0)
    validated = _meta(result, "validated_records")
    assert (validated["total"], validated["kept"], validated["quarantined"]) == (13, 13, 0)
    assert validated["quarantine_ratio"] == 0.0
    shards = _meta(result, "training_shards")
    assert (shards["samples"], shards["shards"]) == (13, 4)  # 4 samples per shard
    assert shards["bytes"] > 0 and shards["token_ids_stored"] is True   # the loader then skips tokenising

    trained = _meta(result, "trained_model")
    assert trained["steps"] == STEPS and trained["final_loss"] > 0
    assert Path(trained["export_dir"], "config.json").is_file()

    ev = _meta(result, "evaluation")
    assert ev["benchmarks"] == 5 and ev["non_finite_metrics"] == 0
    assert "| fgovd-sample | accuracy |" in ev["metrics"]
    assert Path(ev["report"]).is_file()

    reg = _meta(result, "registered_model")
    client = MlflowClient(resources["mlflow"].uri())
    assert str(client.get_model_version_by_alias("fgclip", "challenger").version) == reg["version"]
    assert reg["promoted"] is True and reg["champion_version"] == ""  # the first version: no champion before
    assert str(client.get_model_version_by_alias("fgclip", "champion").version) == reg["version"]
    assert reg["tracking_uri"] == f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}"

    assert not list(cwd.iterdir()), "files written into the working directory"
    assert (tmp_path / "ws" / "mlartifacts").is_dir()
    train_runs = client.search_runs([client.get_experiment_by_name("fgclip-train").experiment_id])
    assert [r.info.run_id for r in train_runs] == [trained["mlflow_run_id"]]
    assert train_runs[0].info.artifact_uri.startswith((tmp_path / "ws" / "mlartifacts").as_uri())

    # A second materialization in the same workspace: annotation chunks are reused, training starts
    # afresh, and the new version is the challenger; champion moves only if it wins on the gate metric.
    again = _rerun(resources)
    assert again.success, [e.message for e in again.all_events if e.is_failure]
    assert _meta(again, "annotated_records")["chunks_skipped"] == 1
    assert _meta(again, "trained_model")["steps"] == STEPS
    reg2 = _meta(again, "registered_model")
    assert reg2["version"] == str(int(reg["version"]) + 1) and reg2["champion_version"] == reg["version"]
    assert str(client.get_model_version_by_alias("fgclip", "challenger").version) == reg2["version"]
    assert reg2["promoted"] is (reg2["challenger_value"] > reg2["champion_value"])
    champion = reg2["version"] if reg2["promoted"] else reg["version"]
    assert str(client.get_model_version_by_alias("fgclip", "champion").version) == champion
    assert len(client.search_runs([client.get_experiment_by_name("fgclip-train").experiment_id])) == 2
    assert not list(cwd.iterdir())
