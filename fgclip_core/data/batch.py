"""The batch contract between the data loader and the trainer.

Texts are tokenised to the full lengths (248 long, 77 short) and padded with the tokenizer's pad
id; the trainer trims each text tensor to its longest real token (exact under the causal mask and
EOS pooling). Boxes are padded to ``K = max_boxes`` with masks; hard negatives to ``1 + N`` texts
per box, positive first.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch


@dataclass
class TrainBatch:
    pixel_values: torch.Tensor       # [B, 3, S, S] float32, normalised
    long_input_ids: torch.Tensor     # [B, 248] int64: the long caption
    short_input_ids: torch.Tensor    # [B, 77] int64: short_caption_prefix + short caption
    box_xyxy: torch.Tensor           # [B, K, 4] float32, normalised xyxy (zeros where padded)
    box_mask: torch.Tensor           # [B, K] bool: a real box
    box_input_ids: torch.Tensor      # [B, K, 77] int64: region text (short_expr / long_expr per config)
    hardneg_input_ids: torch.Tensor  # [B, K, 1 + N, 77] int64: short_expr first, then N negatives
    hardneg_mask: torch.Tensor       # [B, K, 1 + N] bool: [..., 0] box has flag_short_neg; [..., j] negative j exists
    keys: list[str]

    @property
    def batch_size(self) -> int:
        return int(self.pixel_values.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TrainBatch:
        moved: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        return TrainBatch(**moved)

    def pin_memory(self) -> TrainBatch:
        pinned: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            pinned[f.name] = v.pin_memory() if isinstance(v, torch.Tensor) else v
        return TrainBatch(**pinned)
