"""Checkpoint reading/writing: bit-exact round trip, HF conversion, clear errors on bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fgclip_core.model import CheckpointError, FGCLIPModel, load_arch
from fgclip_core.model.build import random_model


@pytest.fixture
def ckpt(tmp_path: Path, tiny_checkpoint_dir: Path) -> Path:
    """A private copy of the tiny checkpoint that a test may damage."""
    dest = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint_dir, dest)
    return dest


def test_round_trip_is_bit_exact(tmp_path: Path):
    model = random_model(load_arch("tiny"), seed=3)
    with torch.no_grad():  # make every tensor distinct from its init pattern
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(str(tmp_path / "a"))
    back = FGCLIPModel.from_pretrained(str(tmp_path / "a"))
    sd, sd_back = model.state_dict(), back.state_dict()
    assert sd.keys() == sd_back.keys()
    for k in sd:
        assert sd_back[k].dtype == sd[k].dtype and torch.equal(sd_back[k], sd[k]), k
    assert back.config == model.config
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["model_type"] == "fgclip"


def test_saved_keys_use_the_official_layout(tiny_checkpoint_dir: Path):
    keys = set(load_file(str(tiny_checkpoint_dir / "model.safetensors")))
    for k in ("text_model.embeddings.position_embedding.weight",
              "text_model.embeddings.position_embedding_ori.weight",
              "text_model.embeddings.position_embedding_res.weight",
              "text_model.encoder.layers.0.self_attn.q_proj.weight",
              "text_model.final_layer_norm.weight",
              "vision_model.embeddings.class_embedding",
              "vision_model.embeddings.patch_embedding.weight",
              "vision_model.pre_layrnorm.weight", "vision_model.post_layernorm.bias",
              "visual_projection.weight", "text_projection.weight", "text_filip_projection.weight",
              "logit_scale", "logit_scale_finegraind", "logit_scale_hardneg"):
        assert k in keys, k


def test_seed_determines_weights(tmp_path: Path):
    a, b, c = (random_model(load_arch("tiny"), seed=s).state_dict() for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["visual_projection.weight"], c["visual_projection.weight"])


def test_official_layout_with_buffers_and_hf_config_loads(ckpt: Path, tiny_checkpoint_dir: Path):
    """The official release: CLIP-style config.json, FG-CLIP keys, stray position_ids buffers."""
    sd = load_file(str(ckpt / "model.safetensors"))
    sd["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    sd["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    save_file(sd, str(ckpt / "model.safetensors"))
    hf_cfg = load_arch("tiny").to_hf_dict()
    hf_cfg["text_config"].update(eos_token_id=2, bos_token_id=0, pad_token_id=1)  # legacy HF values
    (ckpt / "config.json").write_text(json.dumps(hf_cfg))
    model = FGCLIPModel.from_pretrained(str(ckpt))
    ref = FGCLIPModel.from_pretrained(str(tiny_checkpoint_dir))
    assert model.config.text_config.eos_token_id == 49407
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_bin_checkpoint_loads_with_weights_only(ckpt: Path, tiny_checkpoint_dir: Path):
    sd = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    torch.save(sd, ckpt / "pytorch_model.bin")
    model = FGCLIPModel.from_pretrained(str(ckpt))
    assert torch.equal(model.visual_projection.weight, sd["visual_projection.weight"])


class NotATensor:
    """Any pickled class: loading it would run arbitrary code, so weights_only must refuse it."""


def test_bin_with_arbitrary_objects_is_refused(ckpt: Path):
    (ckpt / "model.safetensors").unlink()
    torch.save({"x": NotATensor()}, ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*weights_only=True"):
        FGCLIPModel.from_pretrained(str(ckpt))


def test_missing_directory_config_and_weights(tmp_path: Path, ckpt: Path):
    with pytest.raises(CheckpointError, match="does not exist"):
        FGCLIPModel.from_pretrained(str(tmp_path / "nope"))
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no weights file; expected one of model\.safetensors"):
        FGCLIPModel.from_pretrained(str(ckpt))
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        FGCLIPModel.from_pretrained(str(ckpt))


def test_truncated_safetensors_names_the_file(ckpt: Path):
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: cannot read safetensors"):
        FGCLIPModel.from_pretrained(str(ckpt))
    f.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        FGCLIPModel.from_pretrained(str(ckpt))


def test_wrong_shapes_are_listed(ckpt: Path):
    sd = load_file(str(ckpt / "model.safetensors"))
    sd["visual_projection.weight"] = torch.zeros(32, 64)
    save_file(sd, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"visual_projection\.weight: checkpoint \(32, 64\) vs model \(64, 64\)"):
        FGCLIPModel.from_pretrained(str(ckpt))


def test_missing_and_unexpected_keys_are_listed(ckpt: Path):
    sd = load_file(str(ckpt / "model.safetensors"))
    del sd["text_model.final_layer_norm.bias"]
    sd["extra.head.weight"] = torch.zeros(2)
    save_file(sd, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        FGCLIPModel.from_pretrained(str(ckpt))
    msg = str(err.value)
    assert "model.safetensors" in msg and "text_model.final_layer_norm.bias" in msg and "extra.head.weight" in msg


def test_config_that_does_not_match_weights(ckpt: Path):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["vision_config"]["num_hidden_layers"] = 3
    (ckpt / "config.json").write_text(json.dumps(cfg))
    # refused from the safetensors header, before any module is built
    with pytest.raises(CheckpointError, match=r"model\.safetensors: does not match config\.json: vision_model: "
                                              r"config\.json says num_hidden_layers=3, the weights hold 2 layer"):
        FGCLIPModel.from_pretrained(str(ckpt))
    cfg["vision_config"]["unknown_field"] = 1
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"(?s)config\.json: invalid model config.*unknown_field"):
        FGCLIPModel.from_pretrained(str(ckpt))


def test_hf_clip_conversion_builds_fgclip_heads(hf_clip_tiny_dir: Path):
    from fgclip_core.model.modeling import long_positions_from_short

    sd = load_file(str(hf_clip_tiny_dir / "model.safetensors"))
    model = FGCLIPModel.from_pretrained(str(hf_clip_tiny_dir))
    emb = model.text_model.embeddings
    long = long_positions_from_short(sd["text_model.embeddings.position_embedding.weight"])
    assert torch.equal(emb.position_embedding_ori.weight, long)
    assert torch.equal(emb.position_embedding_res.weight, long)
    assert torch.equal(model.text_filip_projection.weight, sd["text_projection.weight"])
    assert torch.equal(model.logit_scale_finegraind, sd["logit_scale"])
    assert torch.equal(model.logit_scale_hardneg, sd["logit_scale"])


def test_dtype_argument(tiny_checkpoint_dir: Path):
    m = FGCLIPModel.from_pretrained(str(tiny_checkpoint_dir), dtype=torch.bfloat16)
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}


def test_hf_clip_bin_and_sharded_safetensors_load(tmp_path: Path, hf_clip_tiny_dir: Path):
    sd = load_file(str(hf_clip_tiny_dir / "model.safetensors"))
    ref = FGCLIPModel.from_pretrained(str(hf_clip_tiny_dir)).state_dict()
    as_bin = tmp_path / "bin"
    as_bin.mkdir()
    shutil.copy(hf_clip_tiny_dir / "config.json", as_bin)
    torch.save(sd, as_bin / "pytorch_model.bin")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(hf_clip_tiny_dir / "config.json", sharded)
    keys = sorted(sd)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, ks in halves.items():
        save_file({k: sd[k] for k in ks}, str(sharded / name))
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: name for name, ks in halves.items() for k in ks}}))
    for d in (as_bin, sharded):
        got = FGCLIPModel.from_pretrained(str(d)).state_dict()
        assert all(torch.equal(got[k], v) for k, v in ref.items()), d
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002\.safetensors: shard listed in"):
        FGCLIPModel.from_pretrained(str(sharded))


@pytest.mark.parametrize("arch", ["tiny", "ViT-B-16", "ViT-L-14-336"])
def test_architectures_have_hf_clip_shapes(arch: str):
    """Every architecture's CLIP part has exactly transformers.CLIPModel's keys and shapes."""
    from transformers import CLIPConfig, CLIPModel

    cfg = load_arch(arch)
    with torch.device("meta"):
        ours = FGCLIPModel(cfg).state_dict()
        hf = CLIPModel(CLIPConfig(**cfg.to_hf_dict())).state_dict()
    hf = {k: v for k, v in hf.items() if not k.endswith("position_ids")}
    extra = {"text_model.embeddings.position_embedding_ori.weight", "text_model.embeddings.position_embedding_res.weight",
             "text_filip_projection.weight", "logit_scale_finegraind", "logit_scale_hardneg"}
    assert set(ours) - set(hf) == extra and set(hf) <= set(ours)
    assert all(ours[k].shape == v.shape for k, v in hf.items())
    assert ours["text_model.embeddings.position_embedding_res.weight"].shape[0] == 248
