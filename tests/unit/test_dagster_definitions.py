"""The Dagster code location loads, validates with the CLI, and wires the assets in pipeline order."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey

from orchestration.definitions import ALL_ASSETS, defs
from orchestration.model_resources import TrainingResource
from orchestration.partitions import image_batches

REPO = Path(__file__).resolve().parents[2]
K = AssetKey


def _graph():
    return defs.resolve_asset_graph()


DATA = ["raw_images", "long_captions", "region_boxes", "hard_negatives", "validated_records", "training_shards"]
MODEL = ["base_checkpoint", "trained_model", "eval_benchmarks", "evaluation", "registered_model"]


def test_definitions_load_with_jobs_checks_sensor_and_resources():
    assert defs.resolve_job_def("fgclip_pipeline").name == "fgclip_pipeline"
    keys = {a.key for a in ALL_ASSETS}
    assert keys == {K(n) for n in DATA + MODEL}
    assert _graph().get_all_asset_keys() == keys
    checks = {(c.asset_key, c.name) for c in _graph().asset_check_keys}
    assert {(K("validated_records"), "quarantine_ratio_below_threshold"),
            (K("training_shards"), "shards_manifest_verifies")} <= checks
    assert all(_graph().get_check_spec(c).blocking for c in _graph().asset_check_keys)
    assert {"mlflow", "training", "pipes_subprocess_client", "raw_source", "data", "annotation",
            "ref_io_manager"} <= set(defs.resources)
    assert defs.resolve_sensor_def("raw_batches_sensor").job_name == "annotate_batch"


def test_the_data_assets_are_partitioned_per_image_batch_and_hand_refs_on():
    g = _graph()
    for name in DATA:
        node = g.get(K(name))
        assert node.partitions_def == image_batches, name
        assert node.io_manager_key == "ref_io_manager", name
    job = defs.resolve_job_def("annotate_batch")
    assert job.partitions_def == image_batches
    assert {k.path[-1] for k in job.asset_layer.executable_asset_keys} == set(DATA)
    assert g.get(K("long_captions")).pools == {"annotation_endpoint"}


def test_lineage_follows_the_pipeline():
    g = _graph()
    parents = {k.path[-1]: {p.path[-1] for p in g.get(k).parent_keys} for k in g.get_all_asset_keys()}
    chain = ["raw_images", *DATA[1:]]
    for up, down in itertools.pairwise(chain):
        assert parents[down] == {up}, down
    assert parents["raw_images"] == set()
    assert "training_shards" in parents["trained_model"]
    order = [k.path[-1] for level in g.toposorted_asset_keys_by_level for k in level]
    positions = [order.index(n) for n in [*DATA, "trained_model"]]
    assert positions == sorted(positions)


def test_dg_checks_the_project(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dg = Path(sys.executable).with_name("dg")
    proc = subprocess.run([str(dg), "check", "defs"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr


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


