"""`fgclip model init` / `fgclip model convert` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from fgclip_core.cli import cli
from fgclip_core.model import FGCLIPModel, ImageProcessor, load_tokenizer


def test_init_writes_a_loadable_checkpoint(tmp_path: Path, tiny_checkpoint_dir: Path):
    out = tmp_path / "m"
    res = CliRunner().invoke(cli, ["model", "init", "--arch", "tiny", "--output", str(out), "--seed", "0"])
    assert res.exit_code == 0, res.output
    for f in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json"):
        assert (out / f).is_file(), f
    model = FGCLIPModel.from_pretrained(str(out))
    ref = FGCLIPModel.from_pretrained(str(tiny_checkpoint_dir))  # same function, same seed
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())
    assert load_tokenizer(out).encode(["a photo of a cat"], "short")[0, :7].tolist() == \
        [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ImageProcessor.from_pretrained(out).size == 64


def test_init_unknown_arch_is_a_clear_error(tmp_path: Path):
    res = CliRunner().invoke(cli, ["model", "init", "--arch", "ViT-X", "--output", str(tmp_path / "m")])
    assert res.exit_code != 0
    assert "unknown architecture 'ViT-X'" in res.output and "ViT-B-16" in res.output


def test_convert_hf_clip(tmp_path: Path, hf_clip_tiny_dir: Path):
    out = tmp_path / "fg"
    res = CliRunner().invoke(cli, ["model", "convert", "--from", str(hf_clip_tiny_dir), "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["model_type"] == "fgclip"
    a = FGCLIPModel.from_pretrained(str(out))
    b = FGCLIPModel.from_pretrained(str(hf_clip_tiny_dir))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert (out / "tokenizer_config.json").is_file() and (out / "preprocessor_config.json").is_file()


def test_convert_bad_source_is_a_clear_error(tmp_path: Path):
    res = CliRunner().invoke(cli, ["model", "convert", "--from", str(tmp_path), "--output", str(tmp_path / "o")])
    assert res.exit_code != 0 and "config.json: missing" in res.output
