"""FG-CLIP training losses on plain tensors (no model code here).

Terms, as FG-CLIP v1 defines them (all embeddings L2-normalised here):

* global: for the long caption (248 positions, ``text_filip_projection``) and for the short caption
  (77 positions, ``text_projection``), the symmetric cross-entropy of local images against the text
  of *all* ranks and local texts against all images. Features are gathered with gradient
  (``torch.distributed.nn.functional.all_gather``); the targets of rank ``r`` are ``r*B + arange(B)``.
* region: RoI features of the valid boxes against their region texts, symmetric cross-entropy,
  scaled by ``exp(logit_scale_finegraind)``. Local to the rank unless ``gather_regions`` is set.
* hard negatives: for every box with ``flag_short_neg``, ``1 + N`` texts (positive first);
  logits ``exp(logit_scale_hardneg) * <roi, text_j>``, cross-entropy with target 0. Missing
  negatives are masked to ``-inf``; a box without any valid negative is dropped.

Logit scales enter as ``exp(s)``, unclamped, as in the official FG-CLIP code: they learn in both
directions (a clamp here, ``exp(min(s, ln 100))``, gave exactly zero gradient from an OpenAI CLIP
start, whose stored 4.6052 is above ln 100 in float32). An optional cap is applied to the parameters
after each optimizer step by the trainer (``optim.logit_scale_max``, ``fgclip_core.train.scales``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field

from fgclip_core.config import StrictModel


class LossConfig(StrictModel):
    """Weights and limits of the FG-CLIP objective (defaults = the official stage-2 recipe)."""

    long_weight: float = Field(1.0, ge=0)
    short_weight: float = Field(1.0, ge=0)
    region_weight: float = Field(0.1, ge=0)
    hardneg_weight: float = Field(0.5, ge=0)
    gather_regions: bool = False


@dataclass
class StepFeatures:
    """Un-normalised features of one micro-batch, as the model returns them.

    ``region_image``/``region_text`` hold one row per valid box; ``hardneg_image`` [H, D] and
    ``hardneg_text`` [H, 1 + N, D] one row per box that has hard negatives, with ``hardneg_mask``
    [H, 1 + N] (column 0 is the positive and always true).
    """

    image: torch.Tensor
    long_text: torch.Tensor | None
    short_text: torch.Tensor | None
    region_image: torch.Tensor | None = None
    region_text: torch.Tensor | None = None
    hardneg_image: torch.Tensor | None = None
    hardneg_text: torch.Tensor | None = None
    hardneg_mask: torch.Tensor | None = None


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's chunk (all_reduce, then slice).

    Our own small Function: ``torch.distributed.nn.functional.all_gather`` is deprecated and warns on
    every call.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = torch.distributed.get_world_size()
        out = x.new_empty((world * x.shape[0], *x.shape[1:]))
        torch.distributed.all_gather_single(out, x)
        ctx.rows = x.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        torch.distributed.all_reduce(grad)
        start = torch.distributed.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank (rank order) keeping the autograd graph; identity on 1 rank.

    All ranks must pass the same shape (the loader drops incomplete batches).
    """
    _rank, world = _dist_info()
    if world == 1:
        return x
    return _AllGatherWithGrad.apply(x.contiguous())


def global_contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss of local rows against gathered columns (inputs already normalised)."""
    rank, _ = _dist_info()
    all_image = gather_with_grad(image)
    all_text = gather_with_grad(text)
    b = image.shape[0]
    targets = torch.arange(b, device=image.device) + rank * b
    logits_i2t = scale * image @ all_text.T
    logits_t2i = scale * text @ all_image.T
    return (F.cross_entropy(logits_i2t, targets) + F.cross_entropy(logits_t2i, targets)) / 2


def _zero_like_graph(*tensors: torch.Tensor | None) -> torch.Tensor:
    """A zero loss still connected to the inputs (so every rank runs the same backward graph)."""
    present = [t for t in tensors if t is not None]
    out = present[0].sum() * 0.0
    for t in present[1:]:
        out = out + t.sum() * 0.0
    return out


def region_contrastive_loss(region_image: torch.Tensor, region_text: torch.Tensor, scale: torch.Tensor,
                            gather: bool = False) -> torch.Tensor:
    """Symmetric cross-entropy between box features and their texts (inputs already normalised).

    With ``gather`` the boxes of all ranks form one problem (ranks may hold different box counts:
    they are padded for the exchange). Without boxes the loss is a graph-connected zero.
    """
    if gather and _dist_info()[1] > 1:
        region_image, region_text, local_slice = _gather_ragged(region_image, region_text)
    else:
        local_slice = slice(0, region_image.shape[0])
    r = region_image.shape[0]
    if r == 0:
        return _zero_like_graph(region_image, region_text, scale)
    logits = scale * region_image[local_slice] @ region_text.T
    logits_t = scale * region_text[local_slice] @ region_image.T
    targets = torch.arange(local_slice.start, local_slice.stop, device=region_image.device)
    if targets.numel() == 0:
        return _zero_like_graph(region_image, region_text, scale)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits_t, targets)) / 2


def _gather_ragged(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, slice]:
    rank, world = _dist_info()
    n = torch.tensor([a.shape[0]], device=a.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    torch.distributed.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    m = max(counts)
    pad = m - a.shape[0]
    a_p = F.pad(a, (0, 0, 0, pad))
    b_p = F.pad(b, (0, 0, 0, pad))
    ga = gather_with_grad(a_p)
    gb = gather_with_grad(b_p)
    keep = torch.cat([torch.arange(c, device=a.device) + i * m for i, c in enumerate(counts)])
    start = sum(counts[:rank])
    return ga[keep], gb[keep], slice(start, start + counts[rank])


def hard_negative_loss(region_image: torch.Tensor, texts: torch.Tensor, mask: torch.Tensor,
                       scale: torch.Tensor) -> torch.Tensor:
    """(1+N)-way cross-entropy with the positive at index 0 (inputs already normalised).

    ``region_image`` [H, D], ``texts`` [H, 1+N, D], ``mask`` [H, 1+N] bool. Rows whose positive is
    masked or that have no valid negative are dropped; none left gives a graph-connected zero.
    """
    if texts.ndim != 3 or mask.shape != texts.shape[:2] or region_image.shape[0] != texts.shape[0]:
        raise ValueError(f"hard_negative_loss: shapes do not agree: region {tuple(region_image.shape)}, "
                         f"texts {tuple(texts.shape)}, mask {tuple(mask.shape)}")
    mask = mask.bool()
    keep = mask[:, 0] & mask[:, 1:].any(dim=1)
    if not bool(keep.any()):
        return _zero_like_graph(region_image, texts, scale)
    img, txt, m = region_image[keep], texts[keep], mask[keep]
    logits = scale * torch.einsum("hd,hnd->hn", img, txt)
    logits = logits.masked_fill(~m, float("-inf"))
    targets = torch.zeros(img.shape[0], dtype=torch.long, device=img.device)
    return F.cross_entropy(logits, targets)


def fgclip_loss(feats: StepFeatures, logit_scale: torch.Tensor, logit_scale_finegraind: torch.Tensor | None,
                logit_scale_hardneg: torch.Tensor | None, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """All terms and their weighted sum (``loss``); terms with zero weight or no input are skipped.

    Returns un-weighted terms under ``loss_long``, ``loss_short``, ``loss_region``, ``loss_hardneg``, and
    the temperatures used (``exp`` of the scale, detached) under the scale parameters' names.
    """
    out: dict[str, torch.Tensor] = {}
    image = F.normalize(feats.image, dim=-1)
    scale = logit_scale.exp()
    total = image.new_zeros(())
    out["logit_scale"] = scale.detach()
    if feats.long_text is not None and cfg.long_weight > 0:
        out["loss_long"] = global_contrastive_loss(image, F.normalize(feats.long_text, dim=-1), scale)
        total = total + cfg.long_weight * out["loss_long"]
    if feats.short_text is not None and cfg.short_weight > 0:
        out["loss_short"] = global_contrastive_loss(image, F.normalize(feats.short_text, dim=-1), scale)
        total = total + cfg.short_weight * out["loss_short"]
    if feats.region_image is not None and cfg.region_weight > 0:
        if logit_scale_finegraind is None or feats.region_text is None:
            raise ValueError("region loss needs region_text and logit_scale_finegraind")
        s = logit_scale_finegraind.exp()
        out["logit_scale_finegraind"] = s.detach()
        out["loss_region"] = region_contrastive_loss(
            F.normalize(feats.region_image, dim=-1), F.normalize(feats.region_text, dim=-1), s,
            gather=cfg.gather_regions)
        total = total + cfg.region_weight * out["loss_region"]
    if feats.hardneg_image is not None and cfg.hardneg_weight > 0:
        if logit_scale_hardneg is None or feats.hardneg_text is None or feats.hardneg_mask is None:
            raise ValueError("hard-negative loss needs hardneg_text, hardneg_mask and logit_scale_hardneg")
        s = logit_scale_hardneg.exp()
        out["logit_scale_hardneg"] = s.detach()
        out["loss_hardneg"] = hard_negative_loss(
            F.normalize(feats.hardneg_image, dim=-1), F.normalize(feats.hardneg_text, dim=-1),
            feats.hardneg_mask, s)
        total = total + cfg.hardneg_weight * out["loss_hardneg"]
    out["loss"] = total
    return out
