"""One tiny stage-2 run (1 process, ZeRO-3) on a single repeated batch, tracked by a real MLflow server:
the loss falls, retrieval and hard-negative choice on that batch reach 100%, the MLflow run holds
params, per-step metrics and artifacts, and the export loads back with tokenizer and image processor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fgclip_core.model import FGCLIPModel, ImageProcessor, load_tokenizer
from fgclip_core.train.synthetic import SyntheticBatches, TextSpec
from tests.integration.train_run import metrics, run_train, summary

pytestmark = pytest.mark.integration

STEPS = 20
BATCH = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory, mlflow_server):
    out = tmp_path_factory.mktemp("overfit") / "run"
    run_train(out, "--max-steps", str(STEPS), "--save-every", "10", "--set", f"data.loader.batch_size={BATCH}",
              "--set", "deepspeed.zero_stage=3", "--set", "optim.lr=3e-3", "--set", f"tracking.uri={mlflow_server}",
              "--set", "tracking.experiment=overfit",
              "--set", "tracking.system_metrics_interval=0.5", data=f"synthetic://?samples={BATCH}")
    return out, mlflow_server


def test_overfitting_one_batch_drives_loss_down_and_retrieval_to_100_percent(run) -> None:
    out, _ = run
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert rows[-1]["loss"] < 0.1 * rows[0]["loss"]
    model = FGCLIPModel.from_pretrained(str(out / "export")).eval()
    t = model.config.text_config
    batch = SyntheticBatches(f"synthetic://?samples={BATCH}", BATCH, 0, 1, 0, model.config.vision_config.image_size,
                             TextSpec(t.vocab_size, t.bos_token_id, t.eos_token_id, t.pad_token_id), 4, 10).batch(0)
    target = torch.arange(BATCH)
    with torch.no_grad():
        enc = model.encode_image(batch.pixel_values, with_dense=True)
        image = F.normalize(enc.image_embeds, dim=-1)
        for ids, short in ((batch.long_input_ids, False), (batch.short_input_ids, True)):
            text = F.normalize(model.get_text_features(ids, walk_short_pos=short), dim=-1)
            sim = image @ text.T
            assert torch.equal(sim.argmax(1), target) and torch.equal(sim.argmax(0), target)
        sel = batch.box_mask & batch.hardneg_mask[..., 0]
        roi = F.normalize(model.roi_features(enc.dense_map, batch.box_xyxy)[sel], dim=-1)
        ids, mask = batch.hardneg_input_ids[sel], batch.hardneg_mask[sel]
        texts = F.normalize(model.get_text_features(ids.flatten(0, 1)), dim=-1).view(*ids.shape[:2], -1)
        logits = torch.einsum("hd,hnd->hn", roi, texts).masked_fill(~mask, float("-inf"))
        assert roi.shape[0] > 0 and torch.equal(logits.argmax(1), torch.zeros(roi.shape[0], dtype=torch.long))


def test_export_loads_back_with_tokenizer_and_image_processor(run) -> None:
    out, _ = run
    export = out / "export"
    model = FGCLIPModel.from_pretrained(str(export))
    # the trained scales as 0-dim parameters again (no cap by default: they are whatever training made them)
    for name in ("logit_scale", "logit_scale_finegraind", "logit_scale_hardneg"):
        p = getattr(model, name)
        assert p.ndim == 0 and bool(torch.isfinite(p)), name
    tok = load_tokenizer(export)
    ids = tok.encode(["a photo of a red car"], mode="short")
    assert ids.shape == (1, 77)
    proc = ImageProcessor.from_pretrained(export)
    assert proc.size == model.config.vision_config.image_size
    with torch.no_grad():
        assert model.get_text_features(ids).shape == (1, model.config.projection_dim)


def test_mlflow_run_has_params_metrics_artifacts_and_tags(run) -> None:
    from mlflow.tracking import MlflowClient

    out, uri = run
    s = summary(out)
    assert s["tracking_uri"] == uri and s["run_id"] and not s["tracking_failures"]
    client = MlflowClient(uri)
    r = client.get_run(s["run_id"])
    assert r.info.status == "FINISHED"
    p = r.data.params
    assert p["optim.lr"] == "0.003" and p["deepspeed.zero_stage"] == "3" and p["stage"] == "2"
    assert p["loss.hardneg_weight"] == "0.5" and p["data.loader.batch_size"] == str(BATCH)
    for key in ("loss", "loss_long", "loss_short", "loss_region", "loss_hardneg", "lr", "logit_scale",
                "logit_scale_finegraind", "logit_scale_hardneg", "samples_per_s", "tokens_per_s"):
        hist = client.get_metric_history(r.info.run_id, key)
        assert [m.step for m in hist] == list(range(1, STEPS + 1)), key
    assert any(k.startswith("system/cpu") for k in r.data.metrics), sorted(r.data.metrics)
    assert "mlflow.source.git.commit" in r.data.tags and r.data.tags["fgclip.zero_stage"] == "3"
    config_files = {a.path for a in client.list_artifacts(r.info.run_id, "config")}
    assert {"config/deepspeed_config.json", "config/params.json"} <= config_files
    export_files = {a.path for a in client.list_artifacts(r.info.run_id, "export")}
    assert {"export/model.safetensors", "export/config.json", "export/tokenizer.json",
            "export/preprocessor_config.json"} <= export_files
