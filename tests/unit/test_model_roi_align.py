"""RoIAlign: exact on whole cells, equal to a scalar transcription of torchvision's algorithm."""

from __future__ import annotations

import math

import pytest
import torch

from fgclip_core.model.roi_align import roi_align, roi_align_batched


def _bilinear(feat: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """One sample point, torchvision's CPU kernel rules, written as scalar code."""
    _, height, width = feat.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(feat.shape[0], dtype=feat.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * feat[:, y_low, x_low] + hy * lx * feat[:, y_low, x_high]
            + ly * hx * feat[:, y_high, x_low] + ly * lx * feat[:, y_high, x_high])


def reference_roi_align(inp, boxes, out_hw, scale, sampling_ratio, aligned):
    out = torch.zeros(boxes.shape[0], inp.shape[1], *out_hw, dtype=torch.float64)
    for r, (b, x1, y1, x2, y2) in enumerate(boxes.tolist()):
        off = 0.5 if aligned else 0.0
        sx, sy, ex, ey = x1 * scale - off, y1 * scale - off, x2 * scale - off, y2 * scale - off
        rw, rh = ex - sx, ey - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / out_hw[0], rw / out_hw[1]
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / out_hw[0])
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / out_hw[1])
        count = max(gh * gw, 1)
        for ph in range(out_hw[0]):
            for pw in range(out_hw[1]):
                acc = torch.zeros(inp.shape[1], dtype=torch.float64)
                for iy in range(gh):
                    y = sy + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = sx + pw * bw + (ix + 0.5) * bw / gw
                        acc += _bilinear(inp[int(b)].double(), y, x)
                out[r, :, ph, pw] = acc / count
    return out


def test_box_on_whole_cells_is_mean_of_those_cells():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64)
    for b, (i, j, n, m) in [(0, (1, 2, 3, 2)), (1, (0, 0, 1, 1)), (1, (3, 4, 3, 3)), (0, (0, 0, 6, 7))]:
        # box [x1, y1, x2, y2] = [j, i, j + m, i + n]: rows i..i+n-1, columns j..j+m-1
        box = torch.tensor([[b, j, i, j + m, i + n]], dtype=torch.float64)
        got = roi_align(feat, box, (1, 1), 1.0, -1, True)[0, :, 0, 0]
        want = feat[b, :, i:i + n, j:j + m].mean(dim=(1, 2))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_whole_image_box_is_mean_of_all_cells_float32():
    feat = torch.randn(3, 8, 4, 4)
    boxes = torch.tensor([[k, 0.0, 0.0, 4.0, 4.0] for k in range(3)])
    got = roi_align(feat, boxes, 1, 1.0, -1, True)[:, :, 0, 0]
    torch.testing.assert_close(got, feat.mean(dim=(2, 3)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("out_hw", [(1, 1), (2, 3)])
def test_matches_scalar_reference_on_random_boxes(aligned, sampling_ratio, out_hw):
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(3, 4, 6, 5, generator=g, dtype=torch.float64)
    xy = torch.rand(12, 2, generator=g, dtype=torch.float64) * 8 - 2  # some boxes leave the map
    wh = torch.rand(12, 2, generator=g, dtype=torch.float64) * 5
    boxes = torch.cat([torch.randint(0, 3, (12, 1), generator=g).double(), xy, xy + wh], dim=1)
    boxes[0, 1:] = torch.tensor([1.0, 1.0, 1.0, 3.0])  # zero width
    got = roi_align(feat, boxes, out_hw, 0.9, sampling_ratio, aligned)
    want = reference_roi_align(feat, boxes, out_hw, 0.9, sampling_ratio, aligned)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_batched_equals_per_box_rows_across_images():
    g = torch.Generator().manual_seed(2)
    feat = torch.randn(3, 6, 4, 4, generator=g)
    xy = torch.rand(3, 5, 2, generator=g) * 3
    boxes = torch.cat([xy, xy + torch.rand(3, 5, 2, generator=g) * 2 + 0.1], dim=-1)  # [B, K, 4]
    batched = roi_align_batched(feat, boxes, (1, 1))[..., 0, 0]
    rows = torch.cat([torch.arange(3).repeat_interleave(5)[:, None].float(), boxes.reshape(-1, 4)], dim=1)
    # rows shuffled: the result must follow the row order, whatever the image order
    perm = torch.randperm(15, generator=g)
    flat = roi_align(feat, rows[perm], (1, 1), 1.0, -1, True)[:, :, 0, 0]
    torch.testing.assert_close(flat, batched.reshape(15, 6)[perm], rtol=0, atol=1e-6)
    assert batched.shape == (3, 5, 6)


def test_gradient_reaches_features_only_under_the_box():
    feat = torch.randn(1, 2, 4, 4, requires_grad=True)
    out = roi_align(feat, torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]]), 1, 1.0, -1, True)
    out.sum().backward()
    grad = feat.grad[0, 0]
    assert torch.allclose(grad[:2, :2], torch.full((2, 2), 0.25))
    assert grad[2:].abs().sum() == 0 and grad[:, 2:].abs().sum() == 0


def test_rejects_bad_shapes_and_batch_indices():
    feat = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align(feat, torch.tensor([[2.0, 0, 0, 1, 1]]), 1)
    with pytest.raises(ValueError, match=r"\[R, 5\]"):
        roi_align(feat, torch.zeros(3, 4), 1)
    assert roi_align(feat, torch.zeros(0, 5), 1).shape == (0, 3, 1, 1)


def test_padding_boxes_give_zero_features_and_finite_gradients():
    """The loader pads boxes with zeros; they must not produce NaN/inf anywhere."""
    feat = torch.randn(2, 3, 4, 4, requires_grad=True)
    boxes = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 3.0, 2.0]], [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    out = roi_align_batched(feat, boxes, 1)[..., 0, 0]
    assert torch.equal(out[1], torch.zeros(2, 3)) and torch.equal(out[0, 0], torch.zeros(3))
    out.sum().backward()
    assert torch.isfinite(feat.grad).all() and feat.grad[1].abs().sum() == 0
