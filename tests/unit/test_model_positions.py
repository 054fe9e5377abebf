"""The 77 -> 248 long-position table follows FG-CLIP's formula position by position."""

from __future__ import annotations

import pytest
import torch

from fgclip_core.model import FGCLIPModel, load_arch
from fgclip_core.model.modeling import long_positions_from_short


def formula(old: torch.Tensor, keep: int = 20) -> torch.Tensor:
    n = old.shape[0]
    new = torch.empty(4 * n - 3 * keep, old.shape[1], dtype=old.dtype)
    for i in range(keep):
        new[i] = old[i]
    for i in range(n - 1 - keep):
        new[4 * i + keep] = old[i + keep]
        new[4 * i + keep + 1] = 3 * old[i + keep] / 4 + 1 * old[i + keep + 1] / 4
        new[4 * i + keep + 2] = 2 * old[i + keep] / 4 + 2 * old[i + keep + 1] / 4
        new[4 * i + keep + 3] = 1 * old[i + keep] / 4 + 3 * old[i + keep + 1] / 4
    base = 4 * (n - 1 - keep) + keep
    for k in range(4):
        new[base + k] = old[n - 1] + k * (old[n - 1] - old[n - 2]) / 4
    return new


def test_resize_matches_formula_position_by_position():
    old = torch.randn(77, 16, dtype=torch.float64)
    new = long_positions_from_short(old, keep=20)
    want = formula(old)
    assert new.shape == (248, 16)
    for i in range(248):
        torch.testing.assert_close(new[i], want[i], rtol=0, atol=1e-12, msg=f"position {i}")
    assert torch.equal(new[:20], old[:20])
    assert torch.equal(new[20::4][:56], old[20:76])  # every 4th from 20 is an original row
    torch.testing.assert_close(new[244], old[76], rtol=0, atol=0)


def test_model_long_table_is_ori_for_first_20_and_res_after():
    model = FGCLIPModel(load_arch("tiny"))
    emb = model.text_model.embeddings
    with torch.no_grad():
        emb.position_embedding_ori.weight.normal_()
        emb.position_embedding_res.weight.normal_()
    table = emb.positions(248, long=True)
    assert torch.equal(table[:20], emb.position_embedding_ori.weight[:20])
    assert torch.equal(table[20:], emb.position_embedding_res.weight[20:])
    assert torch.equal(emb.positions(77, long=False), emb.position_embedding.weight)


def test_random_init_derives_long_positions_from_short():
    model = FGCLIPModel(load_arch("tiny"))
    emb = model.text_model.embeddings
    want = formula(emb.position_embedding.weight.detach())
    torch.testing.assert_close(emb.position_embedding_ori.weight.detach(), want, rtol=0, atol=1e-7)
    assert torch.equal(emb.position_embedding_ori.weight, emb.position_embedding_res.weight)


def test_config_rejects_inconsistent_long_length():
    from pydantic import ValidationError

    from fgclip_core.model import TextConfig

    with pytest.raises(ValidationError, match="4\\*77 - 3\\*20 = 248"):
        TextConfig(long_max_position_embeddings=250)


def test_long_mode_trains_ori_on_first_20_and_res_on_the_rest():
    model = FGCLIPModel(load_arch("tiny"))
    ids = torch.full((1, 30), 320)
    ids[0, 0], ids[0, -1] = 49406, 49407
    model.get_text_features(ids, walk_short_pos=False).sum().backward()
    emb = model.text_model.embeddings
    g_ori, g_res = emb.position_embedding_ori.weight.grad, emb.position_embedding_res.weight.grad
    assert g_ori[:20].abs().sum() > 0 and g_ori[20:].abs().sum() == 0
    assert g_res[:20].abs().sum() == 0 and g_res[20:30].abs().sum() > 0 and g_res[30:].abs().sum() == 0
    assert emb.position_embedding.weight.grad is None
