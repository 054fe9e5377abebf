"""Finding and opening the images to annotate (local folders or fsspec URLs)."""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageOps

from fgclip_core.data.config import MAX_IMAGE_BYTES
from fgclip_core.data.errors import RecordError
from fgclip_core.data.paths import ImageRoot
from fgclip_core.storage import filesystem, join

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class ImageRef:
    id: str  # WebDataset-safe key (no dots or slashes)
    f_path: str  # path relative to the images root, as written into the record
    url: str  # full local path or URL
    path: str  # the same, as the root's filesystem names it (what ``fs.open`` takes)


@dataclass
class LoadedImage:
    ref: ImageRef
    image: Image.Image  # RGB, EXIF-rotated, downscaled to at most the working size
    width: int  # size after EXIF rotation, before downscaling
    height: int


class ImageLoadError(ValueError):
    pass


def image_id(rel_path: str) -> str:
    stem = rel_path.rsplit(".", 1)[0] if "." in rel_path.rsplit("/", 1)[-1] else rel_path
    return _UNSAFE.sub("_", stem).strip("_") or "image"


def list_images(root: str, extensions: Sequence[str]) -> list[ImageRef]:
    """All images under ``root`` (recursive), sorted by relative path; ids made unique."""
    fs, base = filesystem(root)
    if not fs.exists(base):
        raise FileNotFoundError(f"images root {root!r} does not exist")
    exts = tuple(e.lower() for e in extensions)
    rels = sorted(p[len(base.rstrip("/")) + 1:] for p in fs.find(base) if p.lower().endswith(exts))
    counts = Counter(image_id(r) for r in rels)
    refs: list[ImageRef] = []
    for rel in rels:
        key = image_id(rel)
        if counts[key] > 1:  # "a/b.jpg" and "a_b.png" would share a key: disambiguate both
            key = f"{key}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"
        refs.append(ImageRef(key, rel, join(root, rel), f"{base.rstrip('/')}/{rel}"))
    return refs


def root_of(ref: ImageRef) -> str:
    """The images root ``ref`` was listed under (``ref.url`` is ``root/f_path``)."""
    return ref.url[: len(ref.url) - len(ref.f_path)].rstrip("/") or "/"


def load_image(ref: ImageRef, max_side: int, max_pixels: int, root: ImageRoot | None = None,
               min_side: int = 1, max_bytes: int = MAX_IMAGE_BYTES) -> LoadedImage:
    """Read through ``root`` (inside the root, a regular file, at most ``max_bytes``: ``data.paths``),
    open with PIL, apply EXIF orientation, convert to RGB, downscale to ``max_side``.

    Pass the run's ``root`` when loading many images: making an S3 filesystem costs a fraction of a second."""
    root = root if root is not None else ImageRoot(root_of(ref), max_bytes)
    try:
        data = root.read(ref.f_path)
    except RecordError as e:
        raise ImageLoadError(f"{ref.f_path}: {e}") from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                raise ImageLoadError(f"{ref.f_path}: {img.width}x{img.height} exceeds {max_pixels} pixels")
            if min(img.size) < min_side:
                raise ImageLoadError(f"{ref.f_path}: {img.width}x{img.height} has a side under {min_side} pixels")
            img.load()
            rgb = ImageOps.exif_transpose(img).convert("RGB")  # a broken EXIF block fails here, quarantined too
    except ImageLoadError:
        raise
    except Exception as e:  # PIL raises many types for corrupt files
        raise ImageLoadError(f"{ref.f_path}: cannot decode image: {type(e).__name__}: {e}") from e
    width, height = rgb.size
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return LoadedImage(ref, rgb, width, height)
