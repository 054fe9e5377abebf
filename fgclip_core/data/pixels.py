"""Batched pixels for the loader: resized uint8 RGB, normalised where the model runs.

``ImageProcessor.preprocess_one`` turns each image into float32 with four numpy passes (uint8 ->
float, x 1/255, - mean, / std, then a transposing copy): ~1.2 ms per 224 x 224 image, a third of
the decode itself. The loader instead keeps each resized RGB image (``PixelBatcher.resized``) and
collation packs the batch as planar uint8 ``[B, 3, S, S]`` (``PixelBatcher.__call__``: PIL writes
each channel straight into the batch tensor, shared memory inside a DataLoader worker). The batch
carries a ``PixelNorm`` and is normalised by ``TrainBatch.to(device)`` / ``TrainBatch.normalized()``
on the device that runs the model: a quarter of the bytes cross the process boundary and the
host-to-device copy, and the float work runs on the accelerator (as DALI/FFCV pipelines do).
``PixelNorm`` applies the same float32 operations in the same order as ``preprocess_one`` (uint8 ->
float32, x float32(1/255), - mean, / std, each exactly rounded), so the values are bit-identical
(``tests/unit/test_data_pixels.py``).

``PixelBatcher.for_processor`` accepts only the project's ``ImageProcessor`` whose
``preprocess_one`` is not overridden, reads its ``size`` / ``image_mean`` / ``image_std``, and
checks itself against ``preprocess_one`` on a probe image; otherwise the loader calls the
processor per image and hands over float32 pixels, as before.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import get_worker_info

_SCALE = float(np.float32(1 / 255))   # exactly representable as float32: torch rounds to the same


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


@dataclass(frozen=True)
class PixelNorm:
    """Turns resized uint8 RGB ``[B, 3, S, S]`` into model input: float32, x 1/255, - mean, / std."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """float32 ``[B, 3, S, S]`` on ``pixels.device``, bit-identical to ``ImageProcessor.preprocess_one``."""
        if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"PixelNorm expects uint8 [B, 3, S, S] pixels, got {pixels.dtype} {tuple(pixels.shape)}")
        x = pixels.to(torch.float32, memory_format=torch.contiguous_format)
        x.mul_(_SCALE)
        x.sub_(_channel_tensor(self.mean, str(x.device)))
        x.div_(_channel_tensor(self.std, str(x.device)))
        return x


@functools.lru_cache(maxsize=64)
def _channel_tensor(values: tuple[float, float, float], device: str) -> torch.Tensor:
    """``[1, 3, 1, 1]`` float32 on ``device``, made once (no small host-to-device copy per batch)."""
    return torch.tensor(np.asarray(values, dtype=np.float32)).view(1, 3, 1, 1).to(device)


class PixelBatcherUnavailable(ValueError):
    """The processor is not one whose preprocessing this class reproduces."""


class PixelBatcher:
    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = int(size)
        m, s = (tuple(float(v) for v in values) for values in (mean, std))
        if len(m) != 3 or len(s) != 3:
            raise ValueError(f"image_mean and image_std need 3 values each, got {m} and {s}")
        self.norm = PixelNorm(m, s)  # type: ignore[arg-type]

    @classmethod
    def for_processor(cls, processor: Any) -> PixelBatcher:
        from fgclip_core.model.processing import ImageProcessor

        if not isinstance(processor, ImageProcessor) or \
                type(processor).preprocess_one is not ImageProcessor.preprocess_one:
            raise PixelBatcherUnavailable(f"{type(processor).__name__} is not the plain ImageProcessor")
        cfg = processor.config
        batcher = cls(processor.size, cfg.image_mean, cfg.image_std)
        probe = np.random.default_rng(0).integers(0, 256, (batcher.size, batcher.size, 3), dtype=np.uint8)
        probe[0, :3] = [[0, 0, 0], [255, 255, 255], [1, 128, 254]]
        image = Image.fromarray(probe, "RGB")
        want = processor.preprocess_one(image)
        got = [batcher.norm(batcher([x]))[0] for x in (probe, batcher.resized(image))]
        if not all(torch.equal(g, want) for g in got):
            raise PixelBatcherUnavailable("uint8 batch + PixelNorm differs from preprocess_one on a probe image")
        return batcher

    def resized(self, image: Image.Image) -> Image.Image:
        """RGB, bicubic resize to the square size (as ``preprocess_one``)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        s = self.size
        if image.size != (s, s):
            image = image.resize((s, s), resample=Image.Resampling.BICUBIC)
        return image

    def new_batch(self, n: int) -> torch.Tensor:
        """Uninitialised uint8 ``[n, 3, S, S]`` (shared memory inside a DataLoader worker) for ``put``."""
        s = self.size
        (out,) = new_batch_tensors(torch.uint8, [(n, 3, s, s)])
        return out

    def put(self, batch: torch.Tensor, row: int, image: Image.Image | np.ndarray) -> None:
        """Write one image into row ``row`` of ``batch``: a ``resized`` image (or any image, resized here)
        or an ``[S, S, 3]`` uint8 array. The loader packs each image as soon as it is decoded, while
        its pixels are still in cache, and drops it."""
        planes = batch[row].numpy()
        s = self.size
        if isinstance(image, np.ndarray):
            planes[...] = image.transpose(2, 0, 1)
            return
        image = self.resized(image)
        for c, band in enumerate("RGB"):   # PIL's packer writes each channel: no interleaved copy, no transpose
            planes[c] = np.frombuffer(image.tobytes("raw", band), dtype=np.uint8).reshape(s, s)

    def __call__(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """Planar uint8 ``[B, 3, S, S]`` from ``resized`` images or ``[S, S, 3]`` uint8 arrays (not normalised:
        apply ``self.norm`` on the device)."""
        s = self.size
        out = self.new_batch(len(images))
        for i, im in enumerate(images):
            if isinstance(im, Image.Image) and (im.mode != "RGB" or im.size != (s, s)):
                raise ValueError(f"expected a {s}x{s} RGB image from resized(), got {im.mode} {im.size}")
            self.put(out, i, im)
        return out
