"""RoIAlign in plain PyTorch, same arithmetic as ``torchvision.ops.roi_align`` (no torchvision).

Bilinear sampling is separable: every sample point of a bin is ``(y_i, x_j)`` on a regular grid,
and the bilinear weight of a sample on a cell is ``wy(y_i, row) * wx(x_j, col)`` (a sample outside
``[-1, size]`` on either axis contributes zero, which also factorises). So each RoI becomes two small
weight matrices ``Wy [out_h, H]`` and ``Wx [out_w, W]`` and the pooled value is
``Wy @ feature @ Wx^T / count``: exact, vectorised, and never materialises the sample points times
channels. Adaptive sampling (``sampling_ratio <= 0``) uses ``ceil(roi_size / out_size)`` samples per
bin per RoI, as torchvision does; RoIs with fewer samples are padded with masked-out ones.
"""

from __future__ import annotations

import torch


def _axis_weights(start: torch.Tensor, length: torch.Tensor, out_size: int, size: int,
                  sampling_ratio: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-RoI interpolation weights along one axis.

    ``start``/``length`` are ``[R]`` in input coordinates (already offset for ``aligned``). Returns
    ``(weights [R, out_size, size], samples [R])`` where ``weights`` sums the 1-D bilinear weights of
    the bin's sample points and ``samples`` is the number of sample points per bin on this axis.
    """
    bin_size = length / out_size
    if sampling_ratio > 0:
        grid = torch.full_like(length, float(sampling_ratio))
    else:
        grid = torch.ceil(length / out_size).clamp_min(0)
    g_max = max(int(grid.max().item()) if grid.numel() else 0, 1)
    idx = torch.arange(g_max, dtype=length.dtype, device=length.device)  # [G]
    bins = torch.arange(out_size, dtype=length.dtype, device=length.device)  # [P]
    safe_grid = grid.clamp_min(1)[:, None, None]
    # Sample coordinates [R, P, G]: start + p * bin + (i + 0.5) * bin / grid.
    coord = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]
             + (idx[None, None, :] + 0.5) * bin_size[:, None, None] / safe_grid)
    valid = idx[None, None, :] < grid[:, None, None]
    inside = (coord >= -1.0) & (coord <= size)
    c = coord.clamp_min(0.0)
    low = torch.floor(c)
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    c = torch.where(at_edge, low, c)
    high = torch.where(at_edge, low, low + 1)
    frac = c - low
    keep = (valid & inside).to(coord.dtype)
    w_low = (1.0 - frac) * keep
    w_high = frac * keep
    weights = torch.zeros(*coord.shape[:2], size, dtype=coord.dtype, device=coord.device)
    # Accumulate over the G sample points of each bin (index_add along the cell axis).
    weights.scatter_add_(2, low.long(), w_low)
    weights.scatter_add_(2, high.long(), w_high)
    return weights, grid


def roi_weights(boxes_xyxy: torch.Tensor, height: int, width: int, output_size: tuple[int, int],
                spatial_scale: float = 1.0, sampling_ratio: int = -1,
                aligned: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Wy [..., out_h, H], Wx [..., out_w, W])`` already divided by the sample count.

    ``boxes_xyxy`` is ``[..., 4]`` in input coordinates before ``spatial_scale``. Weights are computed
    in float32 (or float64 if the boxes are float64) and carry no gradient to the boxes.
    """
    lead = boxes_xyxy.shape[:-1]
    dtype = torch.float64 if boxes_xyxy.dtype == torch.float64 else torch.float32
    b = boxes_xyxy.detach().reshape(-1, 4).to(dtype) * spatial_scale
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (b[:, i] - offset for i in range(4))
    w, h = x2 - x1, y2 - y1
    if not aligned:
        w, h = w.clamp_min(1.0), h.clamp_min(1.0)
    out_h, out_w = output_size
    wy, gy = _axis_weights(y1, h, out_h, height, sampling_ratio)
    wx, gx = _axis_weights(x1, w, out_w, width, sampling_ratio)
    count = (gy * gx).clamp_min(1.0)
    wy = wy / count[:, None, None]
    return wy.reshape(*lead, out_h, height), wx.reshape(*lead, out_w, width)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def roi_align(input: torch.Tensor, boxes: torch.Tensor, output_size: int | tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """``torchvision.ops.roi_align`` semantics: ``input [N, C, H, W]``, ``boxes [R, 5]`` rows
    ``[batch_index, x1, y1, x2, y2]`` -> ``[R, C, out_h, out_w]``."""
    if input.dim() != 4:
        raise ValueError(f"roi_align: input must be [N, C, H, W], got shape {tuple(input.shape)}")
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(f"roi_align: boxes must be [R, 5] (batch_index, x1, y1, x2, y2), got {tuple(boxes.shape)}")
    out_hw = _pair(output_size)
    n, c, height, width = input.shape
    r = boxes.shape[0]
    if r == 0:
        return input.new_zeros(0, c, *out_hw)
    batch_index = boxes[:, 0].round().long()
    if bool(((batch_index < 0) | (batch_index >= n)).any()):
        raise ValueError(f"roi_align: batch indices must lie in [0, {n}), got {batch_index.tolist()}")
    wy, wx = roi_weights(boxes[:, 1:], height, width, out_hw, spatial_scale, sampling_ratio, aligned)
    feats = input.to(wy.dtype)
    out = input.new_empty(r, c, *out_hw, dtype=wy.dtype)
    # One pass per image that has boxes: [Ri, P, H] x [C, H, W] x [Ri, Q, W] -> [Ri, C, P, Q].
    for img in torch.unique(batch_index).tolist():
        sel = (batch_index == img).nonzero(as_tuple=True)[0]
        out[sel] = torch.einsum("rph,chw,rqw->rcpq", wy[sel], feats[img], wx[sel])
    return out.to(input.dtype)


def roi_align_batched(input: torch.Tensor, boxes_xyxy: torch.Tensor, output_size: int | tuple[int, int],
                      spatial_scale: float = 1.0, sampling_ratio: int = -1,
                      aligned: bool = True) -> torch.Tensor:
    """RoIAlign with ``K`` boxes per image: ``input [B, C, H, W]``, ``boxes_xyxy [B, K, 4]`` (input
    coordinates before ``spatial_scale``) -> ``[B, K, C, out_h, out_w]``, one batched contraction."""
    if input.dim() != 4 or boxes_xyxy.dim() != 3 or boxes_xyxy.shape[-1] != 4:
        raise ValueError(f"roi_align_batched: expected input [B,C,H,W] and boxes [B,K,4], got "
                         f"{tuple(input.shape)} and {tuple(boxes_xyxy.shape)}")
    if boxes_xyxy.shape[0] != input.shape[0]:
        raise ValueError(f"roi_align_batched: {boxes_xyxy.shape[0]} box rows for {input.shape[0]} images")
    out_hw = _pair(output_size)
    _, _, height, width = input.shape
    wy, wx = roi_weights(boxes_xyxy, height, width, out_hw, spatial_scale, sampling_ratio, aligned)
    out = torch.einsum("bkph,bchw,bkqw->bkcpq", wy, input.to(wy.dtype), wx)
    return out.to(input.dtype)

