"""The three logit scales during training: the optional cap after each optimizer step, the stage-start reset.

The loss uses ``exp(s)`` unclamped (the official FG-CLIP code). ``optim.logit_scale_max`` caps the
parameters *after* the optimizer step, as OpenAI CLIP and open_clip do: the gradient is never blocked
(a scale above the cap still learns downwards), only the stored value is limited. Under DeepSpeed the
value AdamW updates is not always the module's parameter:

* ZeRO 0 in fp32: the optimizer updates the module's parameters themselves;
* ZeRO 1/2 (and the bf16 optimizer at ZeRO 0): the optimizer updates flat fp32 partitions (the master
  copy) and copies them into the module's parameters after the step;
* ZeRO 3: both the master copy and the module's parameter are partitioned over the ranks.

``clamp_scales_`` clamps the master copy through DeepSpeed's tensor-fragment API
(``safe_get_full_fp32_param`` / ``safe_set_full_fp32_param``) and the module's parameter next to it
(gathered and re-partitioned at ZeRO 3); clamping only the module's copy would be undone by the next step.
Every rank must call it (the full-value reads are collectives).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from fgclip_core.train.deepspeed_import import load_deepspeed

log = logging.getLogger(__name__)

REGION_SCALES = ("logit_scale_finegraind", "logit_scale_hardneg")


@torch.no_grad()
def clamp_scales_(params: Iterable[torch.nn.Parameter], max_log: float) -> None:
    """``p <- min(p, max_log)`` for each scale parameter, master copy included, at any ZeRO stage."""
    load_deepspeed()
    from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

    for p in params:
        master = safe_get_full_fp32_param(p)
        if master is None:            # no separate master copy: the parameter is what AdamW updates
            p.clamp_(max=max_log)
            continue
        if float(master.max()) <= max_log:   # every rank sees the same full value: same branch everywhere
            continue
        clamped = master.clamp(max=max_log)
        safe_set_full_fp32_param(p, clamped)
        if hasattr(p, "ds_id"):       # ZeRO 3: the module's copy is partitioned too
            deepspeed = load_deepspeed()
            with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
                if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
                    p.data.copy_(clamped.view_as(p.data).to(p.dtype))
        else:
            p.data.copy_(clamped.view_as(p.data).to(p.dtype))


@torch.no_grad()
def reset_region_scales_(scales: torch.nn.ParameterDict) -> list[str]:
    """Set the region and hard-negative scales to ``logit_scale`` (before DeepSpeed takes the parameters).

    Returns the names that were reset (those the model has).
    """
    done = []
    for name in REGION_SCALES:
        if name in scales:
            scales[name].copy_(scales["logit_scale"])
            done.append(name)
    return done
