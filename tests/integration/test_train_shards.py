"""Real data: 2 processes (gloo, ZeRO-0) train stage 2 on the bundled sample's shards from the tiny
checkpoint, tag the run with the data manifest hash, and resume the loader's position."""

from __future__ import annotations

import hashlib

import pytest

from fgclip_core.model import load_tokenizer
from tests.integration.train_run import metrics, run_train, summary

pytestmark = pytest.mark.integration


def test_two_ranks_train_on_sample_shards_and_resume(sample_shards, tiny_checkpoint_dir, tmp_path) -> None:
    out = tmp_path / "run"
    args = ("--init", str(tiny_checkpoint_dir), "--save-every", "1", "--set", "deepspeed.zero_stage=0",
            "--set", "data.loader.batch_size=2")
    run_train(out, *args, "--max-steps", "2", data=sample_shards.url, nproc=2)
    first = summary(out)
    assert first["steps"] == 2 and first["samples"] == 2 * 2 * 2
    assert {"loss_region", "loss_hardneg"} <= set(metrics(out)[-1])

    from mlflow.tracking import MlflowClient

    tags = MlflowClient(first["tracking_uri"]).get_run(first["run_id"]).data.tags
    manifest = (sample_shards.dir / "manifest.json").read_bytes()
    assert tags["fgclip.data_manifest_sha256"] == hashlib.sha256(manifest).hexdigest()

    run_train(out, *args, "--max-steps", "3", "--resume", "latest", data=sample_shards.url, nproc=2)
    second = summary(out)
    assert second["resumed_from"] == "step-00000002" and second["steps"] == 3
    assert second["run_id"] == first["run_id"]  # the same MLflow run continues
    assert [m["step"] for m in metrics(out)] == [1, 2, 3]
    # the export carries the --init tokenizer
    assert load_tokenizer(out / "export").encode(["a cat"], mode="short").tolist() == \
        load_tokenizer(tiny_checkpoint_dir).encode(["a cat"], mode="short").tolist()
