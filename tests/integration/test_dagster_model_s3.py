"""The model side of the Dagster graph on an ``s3://`` workspace (loopback moto_server): shards, base
checkpoint, training, benchmarks, evaluation and registration in one run; the steps write into scratch
folders, publish to the bucket (completion marker last) and hand on ``s3://`` references. Retention of
versions on S3. The local form is covered by test_dagster_model.py."""

import json
import os

import pytest
from dagster import AssetKey, instance_for_test, materialize
from mlflow import MlflowClient

from assets.evaluation import eval_benchmarks, evaluation
from assets.registry import registered_model
from assets.training import base_checkpoint, trained_model
from fgclip_core import storage
from orchestration.definitions import make_resources
from orchestration.model_resources import TrainingResource
from orchestration.versions import COMPLETE, MARKER, OutputStoreResource
from tests.dagster_standins import real_shards_asset
from tests.integration.test_dagster_model import GATES, TORCH_EXTENSIONS

pytestmark = pytest.mark.integration
MODEL = [base_checkpoint, trained_model, eval_benchmarks, evaluation, registered_model]


@pytest.fixture(autouse=True)
def _restore_mlflow_tracking_uri(monkeypatch):
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)


def _exists(url: str) -> bool:
    fs, path = storage.filesystem(url)
    return bool(fs.exists(path))


def test_model_side_on_s3_publishes_complete_versions_and_registers_from_the_bucket(moto_s3, sample_set, tmp_path,
                                                                                   monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("FGCLIP_HOME", str(home))
    monkeypatch.delenv("FGCLIP_SCRATCH", raising=False)
    data = moto_s3.new_prefix("workspace")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    training = TrainingResource(max_steps=2, nproc=1, save_every=0, torch_extensions_dir=TORCH_EXTENSIONS)
    resources = make_resources(training=training, tracking_uri=uri, data_url=data)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("image_batches", ["batch-a"])
        r = materialize([real_shards_asset(sample_set), *MODEL], instance=instance, resources=resources,
                        partition_key="batch-a", selection=[AssetKey("training_shards")])
        assert r.success
        r = materialize([real_shards_asset(sample_set), *MODEL], selection=[a.key for a in MODEL],
                        instance=instance, resources=resources, raise_on_error=False, run_config=GATES)
        assert r.success, [e.message for e in r.all_events if e.is_failure]

    refs = resources["ref_io_manager"]
    model, ev, bench = (refs.load(AssetKey(a)) for a in ("trained_model", "evaluation", "eval_benchmarks"))
    # the references hold URLs in the bucket, under <data>/<asset>/<run id>/ as the local form lays them out
    assert model.uri == f"{data}/trained_model/{r.run_id}/run/export"
    assert ev.uri == f"{data}/evaluation/{r.run_id}/model"
    assert bench.uri.startswith(f"{data}/eval_benchmarks/") and refs.load(AssetKey("base_checkpoint")).uri.startswith(
        f"{data}/base_checkpoint/")
    # the outputs are objects there, each version complete (marker written after its files)
    for asset in ("base_checkpoint", "trained_model", "eval_benchmarks", "evaluation"):
        fs, path = storage.filesystem(f"{data}/{asset}")
        (version,) = fs.ls(path, detail=False)
        assert fs.exists(f"{version}/{MARKER}") and fs.exists(f"{version}/{COMPLETE}"), asset
    for obj in ("config.json", "model.safetensors"):
        assert _exists(f"{model.uri}/{obj}")
    assert _exists(f"{data}/trained_model/{r.run_id}/run/summary.json")
    assert not _exists(f"{data}/trained_model/{r.run_id}/run/checkpoints")
    assert json.loads(storage.filesystem(ev.uri)[0].cat_file(storage.filesystem(f"{ev.uri}/metrics.json")[1]))
    # nothing written locally but the (emptied) scratch and the checkpoint cache the loader keeps
    assert sorted(p.name for p in home.iterdir()) == ["checkpoints", "scratch"]
    assert not list((home / "scratch").iterdir()), "scratch folders left behind"
    assert not list(cwd.iterdir()), "files written into the working directory"
    # the registered version came from the bucket's model: it says so, and it wraps that very model
    client = MlflowClient(uri)
    (reg,) = r.asset_materializations_for_node("registered_model")
    version = client.get_model_version("fgclip", reg.metadata["version"].value)
    assert version.tags["fgclip.model_uri"] == model.uri and version.tags["fgclip.model_sha256"] == model.sha256
    from fgclip_core.registry import download_checkpoint

    ckpt = download_checkpoint("fgclip", version.version, tmp_path / "download", tracking_uri=uri)
    fs, root = storage.filesystem(model.uri)
    objects = fs.find(root)
    assert len(objects) >= 3 and model.sha256 == ev.model_sha256
    for obj in objects:
        assert (ckpt / obj[len(root) + 1:]).read_bytes() == fs.cat_file(obj), obj


def test_s3_retention_keeps_the_newest_protected_and_foreign_versions(moto_s3, tmp_path, monkeypatch):
    monkeypatch.setenv("FGCLIP_HOME", str(tmp_path / "home"))
    store = OutputStoreResource(root=moto_s3.new_prefix("retention"), keep=2)
    urls = []
    for i in range(4):
        with store.version("trained_model", f"run{i}") as v:
            (v.local / "run").mkdir()
            (v.local / "run" / "weights.bin").write_bytes(bytes([i]) * 8)
            store.publish(v, "run")
            urls.append(v.url)
    with pytest.raises(FileExistsError), store.version("trained_model", "run0"):
        pass
    fs, foreign = storage.filesystem(f"{store.base()}/trained_model/someone-elses/file")
    fs.pipe_file(foreign, b"not ours")
    removed = store.prune("trained_model", protect={f"{urls[0]}/run"})
    assert removed == [urls[1]]   # the oldest but one; run0 is referenced, run2 and run3 are the newest two
    left = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(storage.filesystem(f"{store.base()}/trained_model")[1]))
    assert left == ["run0", "run2", "run3", "someone-elses"]
    assert store.is_complete(f"{urls[2]}/run/weights.bin")
    fs.rm(storage.filesystem(f"{urls[2]}/{COMPLETE}")[1])
    assert not store.is_complete(f"{urls[2]}/run/weights.bin")
    assert not os.listdir(tmp_path / "home" / "scratch")
