"""Per-batch normalisation (data.pixels) equals the processor's per-image path exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fgclip_core.data.pixels import BatchNormalizer, BatchNormalizerUnavailable
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
    norm = BatchNormalizer.for_processor(proc)
    images = _images(7)
    got = norm([norm.resized(im) for im in images])   # what the loader hands over
    want = proc(images)
    assert torch.equal(norm([norm.to_uint8(im) for im in images]), got)
    assert got.dtype == torch.float32 and got.shape == want.shape and got.is_contiguous()
    assert torch.allclose(got, want, rtol=0, atol=1e-6)
    assert torch.equal(got, want)   # same float32 operations in the same order: bit-identical


def test_extreme_values_and_empty():
    proc = ImageProcessor(size=4)
    norm = BatchNormalizer.for_processor(proc)
    for v in (0, 1, 127, 254, 255):
        im = Image.new("RGB", (4, 4), (v, 255 - v, v))
        assert torch.equal(norm([norm.resized(im)]), proc([im]))
    assert norm([]).shape == (0, 3, 4, 4)
    with pytest.raises(ValueError, match="RGB"):
        norm([Image.new("RGB", (5, 4))])


def test_other_processors_are_refused():
    class Custom(ImageProcessor):
        def preprocess_one(self, image):
            return super().preprocess_one(image) * 2

    with pytest.raises(BatchNormalizerUnavailable):
        BatchNormalizer.for_processor(Custom(size=8))
    with pytest.raises(BatchNormalizerUnavailable):
        BatchNormalizer.for_processor(object())
