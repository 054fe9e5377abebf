"""Checkpoints on S3 (loopback moto_server): save to and load from ``s3://`` URLs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fgclip_core import storage
from fgclip_core.model import CheckpointError, FGCLIPModel, ImageProcessor, load_tokenizer

pytestmark = pytest.mark.integration


def test_save_and_load_through_s3(moto_s3, tiny_checkpoint_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FGCLIP_HOME", str(tmp_path / "home"))
    url = moto_s3.new_prefix("ckpt")
    model = FGCLIPModel.from_pretrained(str(tiny_checkpoint_dir))
    model.save_pretrained(url)
    fs, path = storage.filesystem(url)
    # tokenizer and image processor files next to the weights, as `fgclip model init` leaves them
    for f in sorted(p.name for p in tiny_checkpoint_dir.iterdir() if p.name not in ("config.json", "model.safetensors")):
        fs.put(str(tiny_checkpoint_dir / f), f"{path}/{f}")
    back = FGCLIPModel.from_pretrained(url)
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert load_tokenizer(url).encode(["a photo of a cat"], "short")[0, :3].tolist() == [49406, 320, 1125]
    assert ImageProcessor.from_pretrained(url).size == model.config.vision_config.image_size
    # second load comes from the local cache: same result
    assert torch.equal(FGCLIPModel.from_pretrained(url).logit_scale, model.logit_scale)


def test_missing_s3_checkpoint_is_a_clear_error(moto_s3, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FGCLIP_HOME", str(tmp_path / "home"))
    url = moto_s3.new_prefix("absent")
    with pytest.raises(CheckpointError, match=f"{url}: checkpoint directory does not exist"):
        FGCLIPModel.from_pretrained(url)


def test_rewritten_s3_checkpoint_is_fetched_again(moto_s3, tmp_path: Path, monkeypatch):
    from fgclip_core.model import load_arch
    from fgclip_core.model.build import random_model

    monkeypatch.setenv("FGCLIP_HOME", str(tmp_path / "home"))
    url = moto_s3.new_prefix("rewrite")
    first, second = (random_model(load_arch("tiny"), seed=s) for s in (1, 2))
    first.save_pretrained(url)
    assert torch.equal(FGCLIPModel.from_pretrained(url).visual_projection.weight, first.visual_projection.weight)
    second.save_pretrained(url)
    assert torch.equal(FGCLIPModel.from_pretrained(url).visual_projection.weight, second.visual_projection.weight)


def test_cli_init_and_convert_write_to_s3(moto_s3, hf_clip_tiny_dir: Path, tmp_path: Path, monkeypatch):
    from click.testing import CliRunner

    from fgclip_core.cli import cli

    monkeypatch.setenv("FGCLIP_HOME", str(tmp_path / "home"))
    init_url, conv_url = moto_s3.new_prefix("init"), moto_s3.new_prefix("convert")
    res = CliRunner().invoke(cli, ["model", "init", "--arch", "tiny", "--output", init_url, "--seed", "4"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["model", "convert", "--from", str(hf_clip_tiny_dir), "--output", conv_url])
    assert res.exit_code == 0, res.output
    for url in (init_url, conv_url):
        model = FGCLIPModel.from_pretrained(url)
        assert load_tokenizer(url).encode(["a photo of a cat"], "short")[0, 1].item() == 320
        assert ImageProcessor.from_pretrained(url).size == model.config.vision_config.image_size
    converted = FGCLIPModel.from_pretrained(conv_url).state_dict()
    direct = FGCLIPModel.from_pretrained(str(hf_clip_tiny_dir)).state_dict()
    assert all(torch.equal(converted[k], v) for k, v in direct.items())
