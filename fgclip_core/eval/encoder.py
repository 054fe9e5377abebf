"""What the suites need from a model, and the cached, batched layer in front of it.

:class:`Encoder` is the seam: :class:`FGCLIPEncoder` wraps an ``FGCLIPModel`` checkpoint, tests
inject stubs. :class:`CachedEncoder` adds content-hash caching, batching, progress bars, image
loading (missing or undecodable images come back as ``None`` for the suite to count) and L2
normalisation, so every suite gets unit vectors and similarity is a dot product.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from PIL import Image
from tqdm.auto import tqdm

from fgclip_core.eval import io
from fgclip_core.eval.cache import EmbeddingCache, content_key, fingerprint_dir

log = logging.getLogger(__name__)

TextMode = Literal["long", "short"]


class Encoder(Protocol):
    """Raw (un-normalised) features; ``fingerprint`` identifies the weights for caching."""

    fingerprint: str

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:  # [B, D]
        ...

    def encode_texts(self, texts: list[str], mode: TextMode) -> torch.Tensor:  # [N, D]
        ...

    def encode_regions(self, images: list[Image.Image], boxes: list[torch.Tensor]) -> list[torch.Tensor]:
        """``boxes[i]`` is ``[K_i, 4]`` normalised xyxy for ``images[i]``; returns ``[K_i, D]`` each."""
        ...


class FGCLIPEncoder:
    """An FG-CLIP checkpoint folder (``FGCLIPModel.from_pretrained``) as an :class:`Encoder`."""

    def __init__(self, model_dir: str, device: str = "cpu") -> None:
        from fgclip_core.model import FGCLIPModel, ImageProcessor, load_tokenizer

        self.model_dir = model_dir
        self.device = torch.device(device)
        self.model = FGCLIPModel.from_pretrained(model_dir).to(self.device).eval()
        self.tokenizer = load_tokenizer(model_dir)
        self.processor = ImageProcessor.from_pretrained(model_dir)
        self.fingerprint = fingerprint_dir(model_dir)

    def _trim(self, ids: torch.Tensor) -> torch.Tensor:
        # Drop trailing columns after the last EOS of any row (identical features, less work).
        is_eos = ids == self.tokenizer.eos_token_id
        if not bool(is_eos.any(dim=1).all()):
            return ids
        last = int(is_eos.int().argmax(dim=1).max()) + 1
        return ids[:, :last]

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        px = self.processor(images).to(self.device)
        return self.model.get_image_features(px).float().cpu()

    @torch.no_grad()
    def encode_texts(self, texts: list[str], mode: TextMode) -> torch.Tensor:
        ids = self._trim(self.tokenizer.encode(list(texts), mode=mode)).to(self.device)
        return self.model.get_text_features(ids, walk_short_pos=(mode == "short")).float().cpu()

    @torch.no_grad()
    def encode_regions(self, images: list[Image.Image], boxes: list[torch.Tensor]) -> list[torch.Tensor]:
        px = self.processor(images).to(self.device)
        k = max(int(b.shape[0]) for b in boxes)
        padded = torch.zeros(len(boxes), k, 4)
        padded[..., 2:] = 1.0  # padding boxes cover the whole image; their features are dropped
        for i, b in enumerate(boxes):
            padded[i, : b.shape[0]] = b
        feats = self.model.get_image_box_roi_features_normalized(px, padded.to(self.device)).float().cpu()
        return [feats[i, : b.shape[0]] for i, b in enumerate(boxes)]


def xywh_to_normalised_xyxy(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Pixel ``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` in [0, 1] of the original image.

    The processor resizes the image straight to the model's square size, so normalised
    coordinates stay valid after resizing; the model scales them to its patch grid.
    """
    x, y, w, h = box
    x1, y1 = min(max(x / width, 0.0), 1.0), min(max(y / height, 0.0), 1.0)
    x2, y2 = min(max((x + w) / width, 0.0), 1.0), min(max((y + h) / height, 0.0), 1.0)
    return x1, y1, x2, y2


@dataclass
class LoadedImage:
    """Bytes, content hash and header size of an image; pixels are decoded only when encoding."""

    location: str
    key: str  # content hash of the file bytes
    size: tuple[int, int]  # (width, height) of the original image
    _data: bytes

    def decode(self) -> Image.Image | None:
        return io.decode_image(self._data)


def load_image(location: str) -> LoadedImage | None:
    """``None`` when the file is missing or its header is not an image."""
    data = io.read_image_bytes(location)
    size = io.image_size(data) if data is not None else None
    if data is None or size is None:
        return None
    return LoadedImage(location=location, key=content_key(data), size=size, _data=data)


def _decode_all(pending: list, li_index: int = 1) -> list:
    """Pending entries whose image decodes, each with the decoded image appended."""
    ok = []
    for p in pending:
        img = p[li_index].decode()
        if img is not None:
            ok.append((*p, img))
    return ok


class CachedEncoder:
    """Batched, cached, normalised access to an :class:`Encoder`."""

    def __init__(self, encoder: Encoder, cache: EmbeddingCache, batch_size: int = 32, progress: bool = True) -> None:
        self.encoder = encoder
        self.cache = cache
        self.batch_size = batch_size
        self.progress = progress

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint

    def _bar(self, total: int, desc: str) -> tqdm:
        return tqdm(total=total, desc=desc, unit="item", disable=not self.progress, leave=False)

    def texts(self, texts: Sequence[str], mode: TextMode) -> torch.Tensor:
        """``[len(texts), D]`` unit vectors; each distinct text is encoded at most once."""
        ns = f"text-{mode}"
        keys = [content_key(mode, t) for t in texts]
        todo = list(dict.fromkeys(k for k in keys if self.cache.get(ns, k) is None))
        text_of = dict(zip(keys, texts, strict=True))
        with self._bar(len(todo), f"texts ({mode})") as bar:
            for a in range(0, len(todo), self.batch_size):
                batch = todo[a:a + self.batch_size]
                feats = torch.nn.functional.normalize(
                    self.encoder.encode_texts([text_of[k] for k in batch], mode).float(), dim=-1)
                for k, f in zip(batch, feats, strict=True):
                    self.cache.put(ns, k, f)
                bar.update(len(batch))
        return torch.stack([self.cache.peek(ns, k) for k in keys]) if keys else torch.empty(0, 0)

    def images(self, locations: Sequence[str]) -> tuple[torch.Tensor, list[bool]]:
        """Unit vectors for the images that could be read, and a found-flag per location."""
        ns = "image"
        out: list[torch.Tensor | None] = [None] * len(locations)
        pending: list[tuple[int, LoadedImage]] = []

        def flush() -> None:
            ready = _decode_all(pending)  # a truncated file is counted as missing
            pending.clear()
            if not ready:
                return
            feats = torch.nn.functional.normalize(
                self.encoder.encode_images([img for _, _, img in ready]).float(), dim=-1)
            for (i, li, _img), f in zip(ready, feats, strict=True):
                self.cache.put(ns, li.key, f)
                out[i] = self.cache.peek(ns, li.key)

        with self._bar(len(locations), "images") as bar:
            for i, loc in enumerate(locations):
                li = load_image(loc)
                if li is not None:
                    cached = self.cache.get(ns, li.key)
                    if cached is not None:
                        out[i] = cached
                    else:
                        pending.append((i, li))
                        if len(pending) >= self.batch_size:
                            flush()
                bar.update(1)
            flush()
        found = [o is not None for o in out]
        vecs = [o for o in out if o is not None]
        return (torch.stack(vecs) if vecs else torch.empty(0, 0)), found

    def regions(self, requests: Sequence[tuple[str, Sequence[Sequence[float]]]]) -> list[torch.Tensor | None]:
        """For each ``(image location, [xywh pixel boxes])``: ``[K, D]`` unit vectors, or ``None``
        when the image is missing. Region features depend on the whole image, so boxes of one image
        are encoded in the same forward pass."""
        ns = "region"
        out: list[torch.Tensor | None] = [None] * len(requests)
        pending: list[tuple[int, LoadedImage, list[str], torch.Tensor]] = []

        def flush() -> None:
            ready = _decode_all(pending)
            pending.clear()
            if not ready:
                return
            feats = self.encoder.encode_regions([p[4] for p in ready], [p[3] for p in ready])
            for (i, _li, keys, _b, _img), f in zip(ready, feats, strict=True):
                f = torch.nn.functional.normalize(f.float(), dim=-1)
                for k, v in zip(keys, f, strict=True):
                    self.cache.put(ns, k, v)
                out[i] = torch.stack([self.cache.peek(ns, k) for k in keys])

        with self._bar(len(requests), "regions") as bar:
            for i, (loc, boxes) in enumerate(requests):
                li = load_image(loc)
                if li is not None:
                    w, h = li.size
                    norm = [xywh_to_normalised_xyxy(b, w, h) for b in boxes]
                    keys = [content_key(li.key, ",".join(f"{v:.6f}" for v in nb)) for nb in norm]
                    cached = [self.cache.get(ns, k) for k in keys]
                    if all(c is not None for c in cached):
                        out[i] = torch.stack(cached)  # type: ignore[arg-type]
                    else:
                        pending.append((i, li, keys, torch.tensor(norm, dtype=torch.float32)))
                        if len(pending) >= self.batch_size:
                            flush()
                bar.update(1)
            flush()
        return out

    def save(self) -> None:
        self.cache.save()
