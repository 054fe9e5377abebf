"""One training micro-batch: ``TrainBatch`` -> features -> FG-CLIP losses.

The fused path is exact by construction and cheaper than the official code's:

* every text tensor is trimmed to its longest real token (the first EOS of each row, max over
  the rows): with a causal mask and EOS pooling, positions after the EOS never reach the pooled
  feature, so trimmed and padded inputs give identical features;
* all short-mode texts of the step (short captions, region texts, the positives and negatives of
  hard-negative boxes, the valid ones only) are encoded together: one forward, or a few
  length buckets when padding short phrases up to the longest caption would cost more than an
  extra forward (``length_buckets``; measured 2.5x faster on CPU than a single padded forward);
  invalid negative slots are never encoded;
* one vision pass gives both the global embedding and the dense map the RoI features come from.

``naive_features`` is the official-code shape of the same computation (full padding, one text
forward per kind, a second vision pass for regions, every negative slot encoded); it exists for
the equivalence tests and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import nn

from fgclip_core.data.batch import TrainBatch
from fgclip_core.losses import LossConfig, StepFeatures, fgclip_loss
from fgclip_core.model import FGCLIPModel
from fgclip_core.train.config import DEFAULT_BUCKET_OVERHEAD


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


def length_buckets(lengths: torch.Tensor, overhead_tokens: int) -> list[torch.Tensor]:
    """Split rows into groups, each encoded trimmed to its own longest row, minimising
    ``sum(rows * max_len) + overhead_tokens * groups`` (exact DP over the sorted distinct lengths).

    One forward for every text pads short phrases up to the longest caption: on CPU that costs more
    than the extra call saves. ``overhead_tokens`` prices one more forward in tokens; a huge value
    gives one group, 0 one group per distinct length. Returns row-index tensors, shortest group first.
    """
    if lengths.numel() == 0:
        return []
    values, counts = torch.unique(lengths, sorted=True, return_counts=True)
    v, c = values.tolist(), counts.tolist()
    cum = [0]
    for n in c:
        cum.append(cum[-1] + n)
    best = [0.0] + [float("inf")] * len(v)
    cut = [0] * (len(v) + 1)
    for j in range(1, len(v) + 1):          # groups end at distinct value j-1
        for i in range(1, j + 1):           # and start at distinct value i-1
            cost = best[i - 1] + overhead_tokens + v[j - 1] * (cum[j] - cum[i - 1])
            if cost < best[j]:
                best[j], cut[j] = cost, i
    bounds, j = [], len(v)
    while j > 0:
        i = cut[j]
        bounds.append((v[i - 1], v[j - 1]))
        j = i - 1
    return [((lengths >= lo) & (lengths <= hi)).nonzero(as_tuple=True)[0] for lo, hi in reversed(bounds)]


def encode_short_texts(model: FGCLIPModel, ids: torch.Tensor, eos_id: int, overhead_tokens: int) -> torch.Tensor:
    """Short-mode features of every row of ``ids``, in row order, through length-bucketed trimmed forwards."""
    groups = length_buckets(real_lengths(ids, eos_id), overhead_tokens)
    if len(groups) == 1:
        return model.get_text_features(trim_ids(ids, eos_id), walk_short_pos=True)
    feats = [model.get_text_features(trim_ids(ids[g], eos_id), walk_short_pos=True) for g in groups]
    order = torch.cat(groups)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return torch.cat(feats)[inverse]


def _hardneg_selection(batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes that take part in the hard-negative loss ([B, K] bool) and their text mask [H, 1+N]."""
    sel = batch.box_mask & batch.hardneg_mask[..., 0]
    return sel, batch.hardneg_mask[sel]


def fused_features(model: FGCLIPModel, batch: TrainBatch, stage: int, eos_id: int, cfg: LossConfig,
                   overhead_tokens: int = DEFAULT_BUCKET_OVERHEAD) -> tuple[StepFeatures, StepStats]:
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
        text = encode_short_texts(model, ids, eos_id, overhead_tokens)
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


def naive_features(model: FGCLIPModel, batch: TrainBatch, stage: int, eos_id: int, cfg: LossConfig,
                   text_fn: Callable[[torch.Tensor, bool], torch.Tensor] | None = None
                   ) -> tuple[StepFeatures, StepStats]:
    """The official code's way: padded texts, one forward per text kind, separate vision passes.

    ``text_fn(ids, walk_short_pos)`` encodes texts (default ``model.get_text_features``); the
    benchmark passes one that computes every padded position, as the official code does.
    """
    text = text_fn or (lambda ids, short: model.get_text_features(ids, walk_short_pos=short))
    want_regions = stage == 2 and cfg.region_weight > 0
    want_hardneg = stage == 2 and cfg.hardneg_weight > 0 and batch.hardneg_input_ids.shape[2] > 1
    image = model.get_image_features(batch.pixel_values)
    long_text = text(batch.long_input_ids, False) if cfg.long_weight > 0 else None
    short_text = text(batch.short_input_ids, True) if cfg.short_weight > 0 else None
    tokens = batch.long_input_ids.numel() + batch.short_input_ids.numel()
    feats = StepFeatures(image=image, long_text=long_text, short_text=short_text)
    if want_regions or want_hardneg:
        roi = model.get_image_box_roi_features_normalized(batch.pixel_values, batch.box_xyxy)
        if want_regions:
            ids = batch.box_input_ids[batch.box_mask]
            feats.region_image = roi[batch.box_mask]
            feats.region_text = text(ids, True)
            tokens += ids.numel()
        if want_hardneg:
            hn_sel, hn_mask = _hardneg_selection(batch)
            ids = batch.hardneg_input_ids[hn_sel]                       # [H, 1+N, 77], all slots
            flat = text(ids.flatten(0, 1), True)
            feats.hardneg_image = roi[hn_sel]
            feats.hardneg_text = flat.view(*ids.shape[:2], -1)
            feats.hardneg_mask = hn_mask
            tokens += ids.numel()
    return feats, StepStats(samples=batch.batch_size, text_tokens=tokens)


def to_float32(feats: StepFeatures) -> StepFeatures:
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

    def __init__(self, model: FGCLIPModel, stage: int, loss_cfg: LossConfig, eos_id: int, fused: bool = True,
                 bucket_overhead_tokens: int = DEFAULT_BUCKET_OVERHEAD):
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
        self.bucket_overhead_tokens = bucket_overhead_tokens
        self.last_stats: StepStats | None = None

    def forward(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        batch = batch.normalized()   # uint8 loader pixels: normalised here, on the model's device
        if self.fused:
            feats, self.last_stats = fused_features(self.model, batch, self.stage, self.eos_id, self.loss_cfg,
                                                    self.bucket_overhead_tokens)
        else:
            feats, self.last_stats = naive_features(self.model, batch, self.stage, self.eos_id, self.loss_cfg)
        feats = to_float32(feats)  # the loss in fp32 whatever the model precision (bf16 on GPU)
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
