"""The Dagster code location loads, validates with the CLI, and wires the assets in pipeline order."""

import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey

from orchestration.definitions import ALL_ASSETS, defs
from orchestration.resources import TrainingResource, WorkspaceResource

REPO = Path(__file__).resolve().parents[2]
K = AssetKey


def _graph():
    return defs.resolve_asset_graph()


def test_definitions_load_with_job_checks_and_resources():
    job = defs.resolve_job_def("fgclip_pipeline")
    assert job.name == "fgclip_pipeline"
    keys = {a.key for a in ALL_ASSETS}
    assert keys == {K("raw_images"), K("annotated_records"), K("validated_records"), K("training_shards"),
                    K("base_checkpoint"), K("trained_model"), K("eval_benchmarks"), K("evaluation"),
                    K("registered_model")}
    assert _graph().get_all_asset_keys() == keys
    checks = {(c.asset_key, c.name) for c in _graph().asset_check_keys}
    assert checks == {(K("validated_records"), "quarantine_ratio_below_threshold"),
                      (K("training_shards"), "shards_manifest_verifies"),
                      (K("evaluation"), "evaluation_metrics_finite")}
    assert all(_graph().get_check_spec(c).blocking for c in _graph().asset_check_keys)
    assert {"workspace", "mlflow", "training", "pipes_subprocess_client", "ref_io_manager", "output_store",
            "registry"} <= set(defs.resources)


def test_lineage_follows_the_pipeline():
    g = _graph()
    parents = {k: {p for p in g.get(k).parent_keys} for k in g.get_all_asset_keys()}
    assert parents == {
        K("raw_images"): set(),
        K("annotated_records"): {K("raw_images")},
        K("validated_records"): {K("annotated_records")},
        K("training_shards"): {K("validated_records")},
        K("base_checkpoint"): set(),
        K("trained_model"): {K("training_shards"), K("base_checkpoint")},
        K("eval_benchmarks"): set(),
        K("evaluation"): {K("trained_model"), K("base_checkpoint"), K("eval_benchmarks")},
        K("registered_model"): {K("trained_model"), K("evaluation")},
    }
    order = [k for level in g.toposorted_asset_keys_by_level for k in level]
    chain = ["raw_images", "annotated_records", "validated_records", "training_shards", "trained_model",
             "evaluation", "registered_model"]
    positions = [order.index(K(n)) for n in chain]
    assert positions == sorted(positions)


def test_cli_validates_the_code_location(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run([str(dagster), "definitions", "validate", "-m", "orchestration.definitions"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Validation successful" in proc.stdout + proc.stderr


def test_workspace_yaml_points_at_the_module():
    assert "module_name: orchestration.definitions" in (REPO / "workspace.yaml").read_text()


def test_training_command_is_the_fgclip_cli():
    t = TrainingResource(max_steps=6, nproc=2, overrides=["optim.lr=1e-4"])
    cmd = t.command("/d/shards", "/d/run", "/d/base")
    assert cmd[:4] == [sys.executable, "-m", "fgclip_core", "train"]
    flags = dict(zip(cmd[4::2], cmd[5::2], strict=False))
    assert flags["--recipe"] == "tiny-cpu-stage2" and flags["--data"] == "/d/shards"
    assert flags["--output"] == "/d/run" and flags["--init"] == "/d/base"
    assert flags["--max-steps"] == "6" and flags["--nproc"] == "2" and flags["--save-every"] == "3"
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    assert sets == ["tracking.experiment=fgclip-train", "optim.lr=1e-4"] and "--no-progress" in cmd
    assert t.command("d", "o", "i", run_name="dagster-1")[-4:-2] == ["--set", "tracking.run_name=dagster-1"]
    assert t.env("sqlite:///x.db")["MLFLOW_TRACKING_URI"] == "sqlite:///x.db"


def test_workspace_urls(tmp_path):
    assert WorkspaceResource(base_dir=str(tmp_path)).url("shards") == f"{tmp_path}/shards"
    assert WorkspaceResource(base_dir="s3://bucket/fg/").url("shards", "a") == "s3://bucket/fg/shards/a"
    rel = WorkspaceResource().url("eval")
    assert Path(rel).is_absolute() and rel.endswith(".fgclip/dagster/eval")
