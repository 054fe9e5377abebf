"""One training micro-batch: ``TrainBatch`` -> features -> FG-CLIP losses.

The fused path is exact by construction and cheaper than the official code's:

* every text tensor is trimmed to its longest real token (the first EOS of each row, max over
  the rows): with a causal mask and EOS pooling, positions after the EOS never reach the pooled
  feature, so trimmed and padded inputs give identical features;
* all short-mode texts of the step (short captions, region texts, the positives and negatives of
  hard-negative boxes, the valid ones only) go through the text tower in one forward;
* one vision pass gives both the global embedding and the dense map the RoI features come from.

``naive_features`` is the official-code shape of the same computation (full padding, one text
forward per kind, a second vision pass for regions, every negative slot encoded); it exists for
the equivalence tests and the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from fgclip_core.data.batch import TrainBatch
from fgclip_core.losses import LossConfig, StepFeatures, fgclip_loss
from fgclip_core.model import FGCLIPModel


def real_lengths(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Per-row length up to and including the first EOS (the full length where a row has none)."""
    is_eos = ids == eos_id
    first = is_eos.int().argmax(dim=-1)
    return torch.where(is_eos.any(dim=-1), first + 1, torch.full_like(first, ids.shape[-1]))


def trim_ids(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Cut the padded columns that no row needs (exact under causal attention + EOS pooling)."""
    if ids.shape[0] == 0:
        return ids[:, :1]
    return ids[:, : int(real_lengths(ids, eos_id).max())]


@dataclass
class StepStats:
    samples: int
    text_tokens: int      # real tokens (through each row's EOS) of every text encoded


def _hardneg_selection(batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes that take part in the hard-negative loss ([B, K] bool) and their text mask [H, 1+N]."""
    sel = batch.box_mask & batch.hardneg_mask[..., 0]
    return sel, batch.hardneg_mask[sel]


def fused_features(model: FGCLIPModel, batch: TrainBatch, stage: int, eos_id: int,
                   cfg: LossConfig) -> tuple[StepFeatures, StepStats]:
    want_regions = stage == 2 and cfg.region_weight > 0
    want_hardneg = stage == 2 and cfg.hardneg_weight > 0 and batch.hardneg_input_ids.shape[2] > 1
    enc = model.encode_image(batch.pixel_values, with_dense=want_regions or want_hardneg)

    tokens = 0
    long_text = None
    if cfg.long_weight > 0:
        tokens += int(real_lengths(batch.long_input_ids, eos_id).sum())
        long_text = model.get_text_features(trim_ids(batch.long_input_ids, eos_id), walk_short_pos=False)

    parts = [batch.short_input_ids] if cfg.short_weight > 0 else []
    box_sel = batch.box_mask
    if want_regions:
        parts.append(batch.box_input_ids[box_sel])
    if want_hardneg:
        hn_sel, hn_mask = _hardneg_selection(batch)
        parts.append(batch.hardneg_input_ids[hn_sel][hn_mask])
    short_text = region_text = hn_text = None
    if parts:
        ids = torch.cat(parts, dim=0)
        tokens += int(real_lengths(ids, eos_id).sum())
        text = model.get_text_features(trim_ids(ids, eos_id), walk_short_pos=True)
        chunks = list(torch.split(text, [p.shape[0] for p in parts], dim=0))
        if cfg.short_weight > 0:
            short_text = chunks.pop(0)
        if want_regions:
            region_text = chunks.pop(0)
        if want_hardneg:
            flat = chunks.pop(0)
            hn_text = flat.new_zeros(*hn_mask.shape, flat.shape[-1]).index_put((*hn_mask.nonzero(as_tuple=True),), flat)

    feats = StepFeatures(image=enc.image_embeds, long_text=long_text, short_text=short_text)
    if want_regions or want_hardneg:
        assert enc.dense_map is not None
        roi = model.roi_features(enc.dense_map, batch.box_xyxy)        # [B, K, D]
        if want_regions:
            feats.region_image, feats.region_text = roi[box_sel], region_text
        if want_hardneg:
            feats.hardneg_image, feats.hardneg_text, feats.hardneg_mask = roi[hn_sel], hn_text, hn_mask
    return feats, StepStats(samples=batch.batch_size, text_tokens=tokens)


def naive_features(model: FGCLIPModel, batch: TrainBatch, stage: int, eos_id: int,
                   cfg: LossConfig) -> tuple[StepFeatures, StepStats]:
    """The official code's way: padded texts, one forward per text kind, separate vision passes."""
    want_regions = stage == 2 and cfg.region_weight > 0
    want_hardneg = stage == 2 and cfg.hardneg_weight > 0 and batch.hardneg_input_ids.shape[2] > 1
    image = model.get_image_features(batch.pixel_values)
    long_text = model.get_text_features(batch.long_input_ids, walk_short_pos=False) if cfg.long_weight > 0 else None
    short_text = model.get_text_features(batch.short_input_ids, walk_short_pos=True) if cfg.short_weight > 0 else None
    tokens = batch.long_input_ids.numel() + batch.short_input_ids.numel()
    feats = StepFeatures(image=image, long_text=long_text, short_text=short_text)
    if want_regions or want_hardneg:
        roi = model.get_image_box_roi_features_normalized(batch.pixel_values, batch.box_xyxy)
        if want_regions:
            ids = batch.box_input_ids[batch.box_mask]
            feats.region_image = roi[batch.box_mask]
            feats.region_text = model.get_text_features(ids, walk_short_pos=True)
            tokens += ids.numel()
        if want_hardneg:
            hn_sel, hn_mask = _hardneg_selection(batch)
            ids = batch.hardneg_input_ids[hn_sel]                       # [H, 1+N, 77], all slots
            flat = model.get_text_features(ids.flatten(0, 1), walk_short_pos=True)
            feats.hardneg_image = roi[hn_sel]
            feats.hardneg_text = flat.view(*ids.shape[:2], -1)
            feats.hardneg_mask = hn_mask
            tokens += ids.numel()
    return feats, StepStats(samples=batch.batch_size, text_tokens=tokens)


def _to_float32(feats: StepFeatures) -> StepFeatures:
    for f in fields(feats):
        v = getattr(feats, f.name)
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            setattr(feats, f.name, v.float())
    return feats


SCALE_NAMES = ("logit_scale", "logit_scale_finegraind", "logit_scale_hardneg")


class FGCLIPTrainModule(nn.Module):
    """What DeepSpeed wraps: ``forward(batch) -> {"loss", "loss_long", ...}``; the FG-CLIP model is ``.model``.

    The model's 0-dim logit-scale parameters move here as shape-[1] parameters (``scales.<name>``):
    DeepSpeed cannot broadcast or flatten 0-dim tensors. ``model_state_dict()`` puts them back in
    the model's own layout (for the export).
    """

    def __init__(self, model: FGCLIPModel, stage: int, loss_cfg: LossConfig, eos_id: int, fused: bool = True):
        super().__init__()
        self.scales = nn.ParameterDict()
        for name in SCALE_NAMES:
            p = model._parameters.get(name)
            if p is None:
                continue
            self.scales[name] = nn.Parameter(p.detach().reshape(1).clone())
            del model._parameters[name]
        self.model = model
        self.stage = stage
        self.loss_cfg = loss_cfg
        self.eos_id = eos_id
        self.fused = fused
        self.last_stats: StepStats | None = None

    def forward(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        build = fused_features if self.fused else naive_features
        feats, self.last_stats = build(self.model, batch, self.stage, self.eos_id, self.loss_cfg)
        feats = _to_float32(feats)  # the loss in fp32 whatever the model precision (bf16 on GPU)
        sc = self.scales
        return fgclip_loss(feats, sc["logit_scale"][0],
                           sc["logit_scale_finegraind"][0] if "logit_scale_finegraind" in sc else None,
                           sc["logit_scale_hardneg"][0] if "logit_scale_hardneg" in sc else None, self.loss_cfg)

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        """The FG-CLIP model's state dict (scales as 0-dim tensors again), detached copies."""
        state = {n: t.detach().clone() for n, t in [*self.model.named_parameters(), *self.model.named_buffers()]}
        for name, p in self.scales.items():
            state[name] = p.detach().reshape(()).clone()
        return state
