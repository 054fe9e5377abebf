"""Logit-scale helpers without DeepSpeed (the ZeRO paths run in tests/integration/test_train_scales.py)."""

from __future__ import annotations

import torch

from fgclip_core.losses import LossConfig
from fgclip_core.model import FGCLIPModel, load_arch
from fgclip_core.train.scales import clamp_scales_, reset_region_scales_
from fgclip_core.train.step import FGCLIPTrainModule


def _module(values: tuple[float, float, float]) -> FGCLIPTrainModule:
    model = FGCLIPModel(load_arch("tiny"))
    with torch.no_grad():
        for name, v in zip(("logit_scale", "logit_scale_finegraind", "logit_scale_hardneg"), values, strict=True):
            getattr(model, name).fill_(v)
    return FGCLIPTrainModule(model, 2, LossConfig(), model.config.text_config.eos_token_id)


def test_reset_sets_region_scales_to_logit_scale_only() -> None:
    m = _module((4.6052, 2.0, 3.0))
    assert reset_region_scales_(m.scales) == ["logit_scale_finegraind", "logit_scale_hardneg"]
    assert [p.detach().item() for p in m.scales.values()] == [float(torch.tensor(4.6052))] * 3
    assert m.scales["logit_scale_finegraind"].data_ptr() != m.scales["logit_scale"].data_ptr()   # copies


def test_clamp_without_a_master_copy_clamps_the_parameter_and_leaves_lower_ones() -> None:
    m = _module((4.6052, 2.0, 3.0))
    clamp_scales_(m.scales.values(), 2.5)
    assert [p.detach().item() for p in m.scales.values()] == [2.5, 2.0, 2.5]
    assert all(p.requires_grad for p in m.scales.values())


def test_a_scale_above_the_cap_still_gets_the_gradient_that_lowers_it() -> None:
    """The cap acts after the step, so a scale above it keeps its gradient (unlike the old clamp in the loss)."""
    p = torch.nn.Parameter(torch.tensor([4.6052]))
    opt = torch.optim.SGD([p], lr=0.1)
    (p.exp() * 0.01).sum().backward()          # d/dp > 0: SGD lowers p
    assert p.grad is not None and float(p.grad) > 0
    opt.step()
    clamp_scales_([p], 4.6051702)
    assert p.detach().item() < 4.6051702 - 0.05
