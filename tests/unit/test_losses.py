"""Each FG-CLIP loss term against a straightforward per-row reference on random tensors."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from fgclip_core.losses import (
    LossConfig,
    StepFeatures,
    fgclip_loss,
    global_contrastive_loss,
    hard_negative_loss,
    region_contrastive_loss,
)

torch.set_num_threads(1)


def _ref_ce(logits_row: torch.Tensor, target: int) -> torch.Tensor:
    return -(logits_row[target] - torch.logsumexp(logits_row, dim=0))


def _ref_symmetric(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-row loops over normalised ``a`` vs ``b`` rows; pair i is positive."""
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    n = a.shape[0]
    i2t = torch.stack([_ref_ce(torch.stack([scale * (a[i] * b[j]).sum() for j in range(n)]), i) for i in range(n)])
    t2i = torch.stack([_ref_ce(torch.stack([scale * (b[i] * a[j]).sum() for j in range(n)]), i) for i in range(n)])
    return (i2t.mean() + t2i.mean()) / 2


def test_global_loss_matches_reference_single_rank() -> None:
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    got = global_contrastive_loss(F.normalize(img, dim=-1), F.normalize(txt, dim=-1), torch.tensor(7.5))
    torch.testing.assert_close(got, _ref_symmetric(img, txt, 7.5), rtol=1e-5, atol=1e-6)


def test_region_loss_matches_reference_and_empty_is_zero_with_graph() -> None:
    g = torch.Generator().manual_seed(1)
    ri, rt = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    got = region_contrastive_loss(F.normalize(ri, dim=-1), F.normalize(rt, dim=-1), torch.tensor(3.0))
    torch.testing.assert_close(got, _ref_symmetric(ri, rt, 3.0), rtol=1e-5, atol=1e-6)
    empty = torch.zeros(0, 8, requires_grad=True)
    scale = torch.tensor(2.0, requires_grad=True)
    z = region_contrastive_loss(empty, empty, scale)
    assert z.item() == 0.0 and z.requires_grad
    z.backward()
    assert scale.grad is not None and scale.grad.item() == 0.0


def _ref_hardneg(img: torch.Tensor, txt: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    losses = []
    for h in range(img.shape[0]):
        if not mask[h, 0] or not mask[h, 1:].any():
            continue
        valid = [j for j in range(txt.shape[1]) if mask[h, j]]
        logits = torch.stack([scale * (img[h] * txt[h, j]).sum() for j in valid])
        losses.append(_ref_ce(logits, 0))
    return torch.stack(losses).mean()


def test_hard_negative_loss_masks_missing_negatives_and_drops_empty_boxes() -> None:
    g = torch.Generator().manual_seed(2)
    img, txt = torch.randn(4, 8, generator=g), torch.randn(4, 11, 8, generator=g)
    mask = torch.ones(4, 11, dtype=torch.bool)
    mask[1, 4:] = False          # 3 negatives only
    mask[2, 1:] = False          # no negative: dropped
    mask[3, 0] = False           # no flag_short_neg: dropped
    got = hard_negative_loss(F.normalize(img, dim=-1), F.normalize(txt, dim=-1), mask, torch.tensor(5.0))
    assert torch.isfinite(got)
    torch.testing.assert_close(got, _ref_hardneg(img, txt, mask, 5.0), rtol=1e-5, atol=1e-6)
    # garbage in the masked slots must not change anything
    txt2 = txt.clone()
    txt2[1, 4:] = 1e6
    got2 = hard_negative_loss(F.normalize(img, dim=-1), F.normalize(txt2, dim=-1), mask, torch.tensor(5.0))
    torch.testing.assert_close(got, got2)


def test_hard_negative_loss_all_dropped_is_finite_zero() -> None:
    img = torch.randn(2, 8, requires_grad=True)
    txt = torch.randn(2, 11, 8)
    mask = torch.zeros(2, 11, dtype=torch.bool)
    z = hard_negative_loss(img, txt, mask, torch.tensor(5.0))
    z.backward()
    assert z.item() == 0.0 and torch.equal(img.grad, torch.zeros_like(img))


def test_hard_negative_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shapes"):
        hard_negative_loss(torch.randn(2, 8), torch.randn(3, 11, 8), torch.ones(3, 11, dtype=torch.bool),
                           torch.tensor(1.0))


def test_scales_from_an_openai_clip_start_get_a_gradient_in_every_term() -> None:
    """OpenAI CLIP stores logit_scale = 4.6052, above ln 100 in float32: no clamp in the loss, so all three
    scales still get a gradient (the old ``exp(min(s, ln 100))`` gave exactly zero)."""
    assert torch.tensor(4.6052) > torch.tensor(math.log(100.0))
    g = torch.Generator().manual_seed(5)
    feats = StepFeatures(image=torch.randn(4, 8, generator=g), long_text=torch.randn(4, 8, generator=g),
                         short_text=torch.randn(4, 8, generator=g), region_image=torch.randn(6, 8, generator=g),
                         region_text=torch.randn(6, 8, generator=g), hardneg_image=torch.randn(3, 8, generator=g),
                         hardneg_text=torch.randn(3, 11, 8, generator=g),
                         hardneg_mask=torch.ones(3, 11, dtype=torch.bool))
    scales = [torch.tensor(4.6052, requires_grad=True) for _ in range(3)]
    out = fgclip_loss(feats, *scales, LossConfig())
    out["loss"].backward()
    for name, p in zip(("logit_scale", "logit_scale_finegraind", "logit_scale_hardneg"), scales, strict=True):
        assert p.grad is not None and p.grad.item() != 0.0, name
        assert out[name].item() == pytest.approx(math.exp(4.6052), rel=1e-6)   # exp(s), not capped at 100


def test_total_is_weighted_sum_from_config() -> None:
    g = torch.Generator().manual_seed(3)
    feats = StepFeatures(image=torch.randn(4, 8, generator=g), long_text=torch.randn(4, 8, generator=g),
                         short_text=torch.randn(4, 8, generator=g), region_image=torch.randn(6, 8, generator=g),
                         region_text=torch.randn(6, 8, generator=g), hardneg_image=torch.randn(3, 8, generator=g),
                         hardneg_text=torch.randn(3, 11, 8, generator=g),
                         hardneg_mask=torch.ones(3, 11, dtype=torch.bool))
    cfg = LossConfig(long_weight=1.0, short_weight=2.0, region_weight=0.3, hardneg_weight=0.7)
    s = torch.tensor(math.log(20.0))
    out = fgclip_loss(feats, s, s, s, cfg)
    expected = out["loss_long"] + 2.0 * out["loss_short"] + 0.3 * out["loss_region"] + 0.7 * out["loss_hardneg"]
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["loss_short"], _ref_symmetric(feats.image, feats.short_text, 20.0),
                               rtol=1e-5, atol=1e-6)
    off = fgclip_loss(feats, s, s, s, LossConfig(region_weight=0.0, hardneg_weight=0.0))
    assert {k for k in off if k.startswith("loss")} == {"loss", "loss_long", "loss_short"}
    assert off["logit_scale"].item() == pytest.approx(20.0) and "logit_scale_hardneg" not in off


# ---------------------------------------------------------------- 2 ranks (gloo), gather with gradient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, img: torch.Tensor, txt: torch.Tensor, ri: torch.Tensor,
            rt: torch.Tensor, out: dict) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        b = img.shape[0] // world
        x = img[rank * b:(rank + 1) * b].clone().requires_grad_(True)
        t = txt[rank * b:(rank + 1) * b].clone().requires_grad_(True)
        loss = global_contrastive_loss(F.normalize(x, dim=-1), F.normalize(t, dim=-1), torch.tensor(4.0))
        loss.backward()
        # regions: ranks hold different box counts (3 and 1), gathered into one problem
        cut = 3
        sl = slice(0, cut) if rank == 0 else slice(cut, ri.shape[0])
        rx = ri[sl].clone().requires_grad_(True)
        rloss = region_contrastive_loss(F.normalize(rx, dim=-1), F.normalize(rt[sl], dim=-1), torch.tensor(4.0),
                                        gather=True)
        rloss.backward()
        out[rank] = (loss.detach(), x.grad.clone(), t.grad.clone(), rloss.detach(), rx.grad.clone())
    finally:
        torch.distributed.destroy_process_group()


def test_gathered_loss_over_two_ranks_equals_full_batch_loss_and_gradient() -> None:
    g = torch.Generator().manual_seed(4)
    img, txt = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    ri, rt = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), img, txt, ri, rt, out), nprocs=2, join=True)

    full_x, full_t = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
    full = global_contrastive_loss(F.normalize(full_x, dim=-1), F.normalize(full_t, dim=-1), torch.tensor(4.0))
    full.backward()
    mean_loss = (out[0][0] + out[1][0]) / 2
    torch.testing.assert_close(mean_loss, full.detach(), rtol=1e-6, atol=1e-6)
    # each rank's leaf gradient is d(sum of rank losses)/dx; data parallel averages over ranks
    grad_x = torch.cat([out[0][1], out[1][1]]) / 2
    grad_t = torch.cat([out[0][2], out[1][2]]) / 2
    torch.testing.assert_close(grad_x, full_x.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_t, full_t.grad, rtol=1e-5, atol=1e-7)

    # gathered regions: rows weighted by count, so compare the row-weighted mean against full
    rfull_x = ri.clone().requires_grad_(True)
    rfull = region_contrastive_loss(F.normalize(rfull_x, dim=-1), F.normalize(rt, dim=-1), torch.tensor(4.0))
    weighted = (3 * out[0][3] + 1 * out[1][3]) / 4
    torch.testing.assert_close(weighted, rfull.detach(), rtol=1e-6, atol=1e-6)
