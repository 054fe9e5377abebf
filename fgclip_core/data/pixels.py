"""Per-batch image normalisation for the loader.

``ImageProcessor.preprocess_one`` turns each image into float32 with four numpy passes (uint8 ->
float, x 1/255, - mean, / std over a trailing channel axis of 3, then a transposing copy): ~1.2 ms
per 224 x 224 image, a third of the decode itself. The loader's workers instead keep each
resized RGB image (``BatchNormalizer.resized``) and collation normalises the whole batch at once
(``BatchNormalizer.__call__``): PIL packs each channel into a planar uint8 buffer, one uint8 ->
float32 copy, then the same three float32 operations in the same order (x float32(1/255), - mean, / std, each
exactly rounded), so the values are bit-identical to ``preprocess_one`` and to
``ImageProcessor.__call__`` (``tests/unit/test_data_pixels.py``).

``BatchNormalizer.for_processor`` accepts only the project's ``ImageProcessor`` whose
``preprocess_one`` is not overridden, reads its ``size`` / ``image_mean`` / ``image_std``, and
checks itself against ``preprocess_one`` on a probe image; otherwise the loader calls the
processor per image as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import get_worker_info


def new_batch_tensors(dtype: torch.dtype, shapes: Sequence[tuple[int, ...]]) -> list[torch.Tensor]:
    """New contiguous tensors of ``shapes``, all views of one storage; inside a DataLoader worker that
    storage is made in shared memory (as torch's own ``default_collate`` does), so handing the batch to
    the main process copies nothing and passes one file descriptor for all of them."""
    sizes = [math.prod(s) for s in shapes]
    total = sum(sizes)
    if get_worker_info() is None:
        flat = torch.empty(total, dtype=dtype)
    else:
        proto = torch.empty(0, dtype=dtype)
        flat = proto.new(proto._typed_storage()._new_shared(total, device="cpu")).resize_(total)
    out, at = [], 0
    for shape, n in zip(shapes, sizes, strict=True):
        out.append(flat[at:at + n].view(shape))
        at += n
    return out


class BatchNormalizerUnavailable(ValueError):
    """The processor is not one whose preprocessing this class reproduces."""


class BatchNormalizer:
    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = int(size)
        self.scale = float(np.float32(1 / 255))   # exactly representable as float32: torch rounds to the same
        self.mean = torch.tensor(np.asarray(mean, dtype=np.float32)).view(1, 3, 1, 1)
        self.std = torch.tensor(np.asarray(std, dtype=np.float32)).view(1, 3, 1, 1)
        self._chw: np.ndarray | None = None   # uint8 staging buffer, reused batch after batch

    @classmethod
    def for_processor(cls, processor: Any) -> BatchNormalizer:
        from fgclip_core.model.processing import ImageProcessor

        if not isinstance(processor, ImageProcessor) or \
                type(processor).preprocess_one is not ImageProcessor.preprocess_one:
            raise BatchNormalizerUnavailable(f"{type(processor).__name__} is not the plain ImageProcessor")
        cfg = processor.config
        norm = cls(processor.size, cfg.image_mean, cfg.image_std)
        probe = np.random.default_rng(0).integers(0, 256, (norm.size, norm.size, 3), dtype=np.uint8)
        probe[0, :3] = [[0, 0, 0], [255, 255, 255], [1, 128, 254]]
        image = Image.fromarray(probe, "RGB")
        want = processor.preprocess_one(image)
        if not (torch.equal(norm([probe])[0], want) and torch.equal(norm([norm.resized(image)])[0], want)):
            raise BatchNormalizerUnavailable("batch normalisation differs from preprocess_one on a probe image")
        return norm

    def resized(self, image: Image.Image) -> Image.Image:
        """RGB, bicubic resize to the square size (as ``preprocess_one``)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        s = self.size
        if image.size != (s, s):
            image = image.resize((s, s), resample=Image.Resampling.BICUBIC)
        return image

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """``[S, S, 3]`` uint8 of ``resized(image)``."""
        return np.asarray(self.resized(image))

    def __call__(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """``[B, 3, S, S]`` float32, normalised, from ``resized`` images or ``[S, S, 3]`` uint8 arrays."""
        if not images:
            return torch.empty(0, 3, self.size, self.size)
        # Planar uint8 (a quarter of the bytes) in a buffer kept between batches, each channel written
        # by PIL's own packer (no interleaved copy, no transpose), then converted with copy_ (much
        # faster than .to()) and normalised in place.
        n, s = len(images), self.size
        if self._chw is None or self._chw.shape[0] < n:
            self._chw = np.empty((n, 3, s, s), dtype=np.uint8)
        chw = self._chw[:n]
        for i, im in enumerate(images):
            if isinstance(im, np.ndarray):
                chw[i] = im.transpose(2, 0, 1)
            else:
                if im.mode != "RGB" or im.size != (s, s):
                    raise ValueError(f"expected a {s}x{s} RGB image from resized(), got {im.mode} {im.size}")
                for c, band in enumerate("RGB"):
                    chw[i, c] = np.frombuffer(im.tobytes("raw", band), dtype=np.uint8).reshape(s, s)
        (x,) = new_batch_tensors(torch.float32, [(n, 3, s, s)])
        x.copy_(torch.from_numpy(chw))
        x.mul_(self.scale)
        x.sub_(self.mean)
        x.div_(self.std)
        return x
