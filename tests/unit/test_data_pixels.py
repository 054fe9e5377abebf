"""Loader pixels (data.pixels): uint8 batches + PixelNorm equal the processor's per-image path exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fgclip_core.data.batch import TrainBatch
from fgclip_core.data.pixels import PixelBatcher, PixelBatcherUnavailable, PixelNorm
from fgclip_core.model.processing import ImageProcessor

torch.set_num_threads(1)


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(5, 90)), int(rng.integers(5, 90))
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        im = Image.fromarray(arr, "RGB")
        out.append(im.convert(["RGB", "L", "RGBA"][i % 3]))   # non-RGB modes are converted like the processor does
    return out


@pytest.mark.parametrize("kw", [{"size": 32}, {"size": 17, "image_mean": (0.5, 0.25, 0.125), "image_std": (0.2, 0.3, 0.7)}])
def test_batch_equals_processor(kw):
    proc = ImageProcessor(**kw)
    batcher = PixelBatcher.for_processor(proc)
    images = _images(7)
    packed = batcher([batcher.resized(im) for im in images])   # what the loader hands over
    assert packed.dtype == torch.uint8 and packed.shape == (7, 3, proc.size, proc.size)
    assert torch.equal(batcher([np.asarray(batcher.resized(im)) for im in images]), packed)
    got, want = batcher.norm(packed), proc(images)
    assert got.dtype == torch.float32 and got.shape == want.shape and got.is_contiguous()
    assert torch.allclose(got, want, rtol=0, atol=1e-6)
    assert torch.equal(got, want)   # same float32 operations in the same order: bit-identical


def test_extreme_values_and_empty():
    proc = ImageProcessor(size=4)
    batcher = PixelBatcher.for_processor(proc)
    for v in (0, 1, 127, 254, 255):
        im = Image.new("RGB", (4, 4), (v, 255 - v, v))
        assert torch.equal(batcher.norm(batcher([batcher.resized(im)])), proc([im]))
    assert batcher([]).shape == (0, 3, 4, 4) and batcher.norm(batcher([])).shape == (0, 3, 4, 4)
    with pytest.raises(ValueError, match="RGB"):
        batcher([Image.new("RGB", (5, 4))])
    with pytest.raises(ValueError, match="uint8"):
        batcher.norm(torch.zeros(1, 3, 4, 4))


def test_train_batch_normalises_once_where_it_goes():
    proc = ImageProcessor(size=8)
    batcher = PixelBatcher.for_processor(proc)
    images = _images(2, seed=3)
    z = torch.zeros
    batch = TrainBatch(batcher([batcher.resized(im) for im in images]), z(2, 248), z(2, 77), z(2, 1, 4),
                       z(2, 1, dtype=torch.bool), z(2, 1, 77), z(2, 1, 11, 77), z(2, 1, 11, dtype=torch.bool),
                       ["a", "b"], pixel_norm=batcher.norm)
    moved = batch.to("cpu")
    assert moved.pixel_norm is None and torch.equal(moved.pixel_values, proc(images))
    assert moved.normalized() is moved   # already float: nothing to do
    assert batch.to("cpu", normalize=False).pixel_values.dtype == torch.uint8
    assert torch.equal(batch.normalized().pixel_values, moved.pixel_values)


def test_other_processors_are_refused():
    class Custom(ImageProcessor):
        def preprocess_one(self, image):
            return super().preprocess_one(image) * 2

    with pytest.raises(PixelBatcherUnavailable):
        PixelBatcher.for_processor(Custom(size=8))
    with pytest.raises(PixelBatcherUnavailable):
        PixelBatcher.for_processor(object())
    with pytest.raises(ValueError, match="3 values"):
        PixelBatcher(8, (0.5, 0.5), (0.2, 0.2, 0.2))
    assert PixelNorm((0.5,) * 3, (0.25,) * 3) == PixelNorm((0.5,) * 3, (0.25,) * 3)
