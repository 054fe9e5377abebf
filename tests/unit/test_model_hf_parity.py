"""Same weights, same features as ``transformers.CLIPModel`` (float32, max abs diff <= 1e-5)."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from fgclip_core.model import FGCLIPModel, load_tokenizer

TOL = 1e-5


def as_tensor(out) -> torch.Tensor:
    """transformers 5 returns a model output whose ``pooler_output`` is the projected feature."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@pytest.fixture(scope="module")
def pair(hf_clip_tiny_dir):
    hf = CLIPModel.from_pretrained(str(hf_clip_tiny_dir)).eval()
    ours = FGCLIPModel.from_pretrained(str(hf_clip_tiny_dir)).eval()
    return hf, ours


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_image_features_match_transformers(pair):
    hf, ours = pair
    s = ours.config.vision_config.image_size
    pixels = torch.randn(4, 3, s, s, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = as_tensor(hf.get_image_features(pixel_values=pixels))
        got = ours.get_image_features(pixels)
    assert got.shape == want.shape
    assert max_diff(got, want) <= TOL


def test_short_text_features_match_transformers(pair, hf_clip_tiny_dir):
    hf, ours = pair
    tok = load_tokenizer(hf_clip_tiny_dir)
    ids = tok.encode(["a photo of a cat", "a dog running on the beach at sunset, seen from far away",
                      "x " * 100], mode="short")
    with torch.no_grad():
        want = as_tensor(hf.get_text_features(input_ids=ids))
        got = ours.get_text_features(ids, walk_short_pos=True)
    assert max_diff(got, want) <= TOL


def test_converted_heads_are_copies(pair):
    hf, ours = pair
    assert torch.equal(ours.text_filip_projection.weight, hf.text_projection.weight)
    assert ours.logit_scale_finegraind.item() == ours.logit_scale_hardneg.item() == hf.logit_scale.item()


def test_long_text_equals_clip_with_the_248_table(pair, hf_clip_tiny_dir):
    """Long mode is CLIP with the combined 248-row table and ``text_filip_projection``."""
    _, ours = pair
    cfg = CLIPConfig(**ours.config.to_hf_dict(long_text=True))
    hf_long = CLIPModel(cfg).eval()
    sd = {k: v for k, v in ours.state_dict().items() if k in hf_long.state_dict()}
    sd["text_model.embeddings.position_embedding.weight"] = ours.text_model.embeddings.positions(248, True)
    sd["text_projection.weight"] = ours.text_filip_projection.weight
    missing, _ = hf_long.load_state_dict(sd, strict=False)
    assert not [k for k in missing if not k.endswith("position_ids")]
    tok = load_tokenizer(hf_clip_tiny_dir)
    ids = tok.encode(["word " * 150, "a short one"], mode="long")
    with torch.no_grad():
        want = as_tensor(hf_long.get_text_features(input_ids=ids))
        got = ours.get_text_features(ids, walk_short_pos=False)
    assert max_diff(got, want) <= TOL


def test_legacy_clip_config_with_eos_id_2(tmp_path, hf_clip_tiny_dir):
    """openai/clip-vit-base-patch16's config says eos_token_id=2 (HF then pools at argmax(input_ids),
    the first 49407); the import maps it to the real EOS id and pools at the same token."""
    import json

    saved = json.loads((hf_clip_tiny_dir / "config.json").read_text())
    text = {**saved["text_config"], "eos_token_id": 2, "bos_token_id": 0, "pad_token_id": 1}
    legacy = CLIPConfig(text_config=text, vision_config=saved["vision_config"], projection_dim=saved["projection_dim"])
    hf = CLIPModel.from_pretrained(str(hf_clip_tiny_dir), config=legacy).eval()
    assert hf.config.text_config.eos_token_id == 2
    hf.save_pretrained(str(tmp_path))
    ours = FGCLIPModel.from_pretrained(str(tmp_path)).eval()
    assert ours.config.text_config.eos_token_id == 49407
    ids = load_tokenizer(hf_clip_tiny_dir).encode(["a photo of a cat", "two dogs on a beach"], mode="short")
    with torch.no_grad():
        diff = max_diff(ours.get_text_features(ids), as_tensor(hf.get_text_features(input_ids=ids)))
    assert diff <= TOL
