"""Safe image decoding: size guard from the header, full decode, orientation and mode fixes.

``decode_image`` never lets a bad file escape as an arbitrary exception: it raises ``RecordError``
with ``image_corrupt``, ``image_truncated``, ``image_too_large`` or ``image_too_small``. Modes
other than RGB (CMYK, L, P, RGBA, LA, I;16, I, F ...) and EXIF-rotated images are converted, not
rejected: transparency is composited on white, 16/32-bit data is scaled to 8 bits.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fgclip_core.data.errors import Reason, RecordError

_EXIF_ORIENTATION = 0x0112


@dataclass
class DecodedImage:
    image: Image.Image       # RGB, upright
    source_format: str | None
    source_mode: str
    reencode: bool           # False: the original bytes already are an upright RGB JPEG


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        return Image.fromarray(_scale_to_8bit(arr, mode), mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        if img.mode == "RGB":
            return img
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _scale_to_8bit(arr: np.ndarray, mode: str) -> np.ndarray:
    """16-bit data is divided by 257; 32-bit int / float data by the range it evidently uses."""
    top = float(arr.max()) if arr.size else 0.0
    if mode.startswith("I;16"):
        scale = 255.0 / 65535.0
    elif mode == "F" and top <= 1.0:
        scale = 255.0
    elif top <= 255.0:
        scale = 1.0
    elif top <= 65535.0:
        scale = 255.0 / 65535.0
    else:
        scale = 255.0 / top
    return np.clip(arr * scale, 0, 255).round().astype(np.uint8)


def check_size(width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise RecordError(Reason.IMAGE_TOO_LARGE, f"{width}x{height} = {width * height} pixels > max_pixels {max_pixels}")
    if min(width, height) < min_side:
        raise RecordError(Reason.IMAGE_TOO_SMALL, f"{width}x{height} has a side < min_side {min_side}")


def decode_image(data: bytes, *, max_pixels: int, min_side: int,
                 draft_size: int | None = None) -> DecodedImage:
    """Decode ``data`` fully into an upright RGB image, or raise ``RecordError``.

    ``draft_size`` lets the JPEG decoder work at a reduced scale that stays >= that size (faster
    when images are far larger than the model input); leave it None when validating.
    """
    if not data:
        raise RecordError(Reason.IMAGE_CORRUPT, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            # The header is read: check the size before any pixel is decoded.
            check_size(img.width, img.height, max_pixels, min_side)
            if draft_size is not None and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img.load()
    except RecordError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise RecordError(Reason.IMAGE_TOO_LARGE, str(e)) from e
    except UnidentifiedImageError as e:
        raise RecordError(Reason.IMAGE_CORRUPT, "not a recognised image format") from e
    except (OSError, EOFError, SyntaxError, ValueError, IndexError, TypeError, MemoryError) as e:
        msg = str(e) or type(e).__name__
        low = msg.lower()
        reason = Reason.IMAGE_TRUNCATED if ("truncated" in low or isinstance(e, EOFError) or "end of file" in low
                                            or "premature" in low) else Reason.IMAGE_CORRUPT
        raise RecordError(reason, msg) from e
    source_format, source_mode = img.format, img.mode
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block is not a broken image: keep the pixels as stored
        orientation = 1
    try:
        upright = ImageOps.exif_transpose(img) if orientation not in (None, 1) else img
        rgb = _to_rgb(upright)
    except (OSError, ValueError, TypeError) as e:
        raise RecordError(Reason.IMAGE_CORRUPT, f"cannot convert {source_mode} image: {e}") from e
    reencode = not (source_format == "JPEG" and source_mode == "RGB" and orientation in (None, 1))
    return DecodedImage(rgb, source_format, source_mode, reencode)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """Deterministic JPEG bytes (no EXIF, no timestamps) for the same pixels and Pillow build."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buf.getvalue()
