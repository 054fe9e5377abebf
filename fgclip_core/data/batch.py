"""The batch contract between the data loader and the trainer.

Texts are tokenised to the full lengths (248 long, 77 short) and padded with the tokenizer's pad
id; the trainer trims each text tensor to its longest real token (exact under the causal mask and
EOS pooling). Boxes are padded to ``K = max_boxes`` with masks; hard negatives to ``1 + N`` texts
per box, positive first.

Pixels come either normalised (float32) or, from the loader's fast path, as resized uint8 RGB with
the ``PixelNorm`` that normalises them (``data.pixels``). ``to(device)`` moves the uint8 bytes and
normalises on that device; ``normalized()`` does it where the batch is. Model code only ever sees
float pixels: the train step calls ``normalized()`` first.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from fgclip_core.data.pixels import PixelNorm


@dataclass
class TrainBatch:
    pixel_values: torch.Tensor       # [B, 3, S, S] float32 normalised, or uint8 RGB when pixel_norm is set
    long_input_ids: torch.Tensor     # [B, 248] int64: the long caption
    short_input_ids: torch.Tensor    # [B, 77] int64: short_caption_prefix + short caption
    box_xyxy: torch.Tensor           # [B, K, 4] float32, normalised xyxy (zeros where padded)
    box_mask: torch.Tensor           # [B, K] bool: a real box
    box_input_ids: torch.Tensor      # [B, K, 77] int64: region text (short_expr / long_expr per config)
    hardneg_input_ids: torch.Tensor  # [B, K, 1 + N, 77] int64: short_expr first, then N negatives
    hardneg_mask: torch.Tensor       # [B, K, 1 + N] bool: [..., 0] box has flag_short_neg; [..., j] negative j exists
    keys: list[str]
    pixel_norm: PixelNorm | None = None   # set: pixel_values are uint8 and still to be normalised

    @property
    def batch_size(self) -> int:
        return int(self.pixel_values.shape[0])

    def normalized(self) -> TrainBatch:
        """This batch with float32 normalised ``pixel_values`` (itself when they already are)."""
        if self.pixel_norm is None:
            return self
        return replace(self, pixel_values=self.pixel_norm(self.pixel_values), pixel_norm=None)

    def to(self, device: torch.device | str, non_blocking: bool = False, normalize: bool = True) -> TrainBatch:
        """Tensors moved to ``device``; uint8 pixels cross as uint8 and are normalised there unless
        ``normalize=False``."""
        moved: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        out = TrainBatch(**moved)
        return out.normalized() if normalize else out

    def pin_memory(self) -> TrainBatch:
        pinned: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            pinned[f.name] = v.pin_memory() if isinstance(v, torch.Tensor) else v
        return TrainBatch(**pinned)
