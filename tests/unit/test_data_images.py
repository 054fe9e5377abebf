"""Safe decoding: modes converted, EXIF applied, bad bytes and absurd sizes rejected with reasons."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fgclip_core.data.errors import Reason, RecordError
from fgclip_core.data.images import decode_image, encode_jpeg
from tests.fixtures.data import image_bytes

LIMITS = {"max_pixels": 10_000_000, "min_side": 8}


@pytest.mark.parametrize(("mode", "fmt"), [
    ("CMYK", "JPEG"), ("L", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("I;16", "PNG"), ("LA", "PNG"), ("RGB", "PNG"),
])
def test_modes_are_converted_to_rgb(mode, fmt):
    data = image_bytes(64, 48, mode=mode, fmt=fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith(mode[:1])  # the input really is in that mode family
    out = decode_image(data, **LIMITS)
    assert out.image.mode == "RGB" and out.image.size == (64, 48)
    assert out.reencode  # anything but an upright RGB JPEG is re-encoded for the shard
    arr = np.asarray(out.image)
    assert arr.std() > 5  # real content survived (16-bit data scaled, not clipped to white)


def test_rgba_transparent_area_becomes_white():
    out = decode_image(image_bytes(32, 32, mode="RGBA", fmt="PNG"), **LIMITS)
    arr = np.asarray(out.image)
    assert (arr[:16] == 255).all()          # alpha 0 in the top half
    assert not (arr[16:] == 255).all()


def test_16bit_is_scaled_not_clipped():
    out = decode_image(image_bytes(64, 48, mode="I;16", fmt="PNG"), **LIMITS)
    ref = np.asarray(Image.open(io.BytesIO(image_bytes(64, 48))).convert("L"), dtype=np.float64)
    got = np.asarray(out.image.convert("L"), dtype=np.float64)
    assert np.abs(got - ref).mean() < 8   # JPEG reference vs PNG 16-bit: same picture


def test_exif_rotation_applied():
    data = image_bytes(64, 32, exif_orientation=6)  # stored landscape, displayed portrait
    out = decode_image(data, **LIMITS)
    assert out.image.size == (32, 64) and out.reencode


def test_upright_rgb_jpeg_keeps_original_bytes():
    out = decode_image(image_bytes(64, 48), **LIMITS)
    assert not out.reencode and out.source_format == "JPEG"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_is_image_truncated(fmt):
    data = image_bytes(256, 256, fmt=fmt, seed=3)
    with pytest.raises(RecordError) as e:
        decode_image(data[: len(data) // 2], **LIMITS)
    assert e.value.reason == Reason.IMAGE_TRUNCATED


@pytest.mark.parametrize("data", [b"", b"definitely not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64])
def test_corrupt_is_image_corrupt(data):
    with pytest.raises(RecordError) as e:
        decode_image(data, **LIMITS)
    assert e.value.reason == Reason.IMAGE_CORRUPT


@pytest.mark.parametrize("marker", [b"\xff\xc4", b"\xff\xc0", b"\xff\xdb"])  # Huffman, frame, quant tables
def test_corrupted_jpeg_headers_are_image_corrupt(marker):
    # (Damage inside the entropy-coded scan is, by libjpeg's design, decoded with artefacts, not detected.)
    data = bytearray(image_bytes(128, 128, seed=5))
    pos = data.index(marker)
    data[pos + 4: pos + 40] = b"\xff" * 36
    with pytest.raises(RecordError) as e:
        decode_image(bytes(data), **LIMITS)
    assert e.value.reason == Reason.IMAGE_CORRUPT


def test_bomb_guard_checks_header_before_decoding(monkeypatch):
    from PIL import ImageFile

    data = image_bytes(200, 100, fmt="PNG")
    loaded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: (loaded.append(1), real_load(self))[1])
    decode_image(data, max_pixels=20_000, min_side=1)
    assert loaded                    # the spy sees pixel decoding when the size is allowed
    loaded.clear()
    with pytest.raises(RecordError) as e:
        decode_image(data, max_pixels=19_999, min_side=1)
    assert e.value.reason == Reason.IMAGE_TOO_LARGE and "20000" in e.value.detail
    assert loaded == []              # rejected from the header alone


def test_too_small():
    with pytest.raises(RecordError) as e:
        decode_image(image_bytes(4, 40, fmt="PNG"), **LIMITS)
    assert e.value.reason == Reason.IMAGE_TOO_SMALL


def test_draft_decodes_large_jpeg_at_reduced_scale_but_not_below_target():
    out = decode_image(image_bytes(1024, 768), **LIMITS, draft_size=224)
    assert min(out.image.size) >= 224 and out.image.size[0] < 1024


def test_encode_jpeg_is_deterministic():
    img = decode_image(image_bytes(64, 48, mode="P", fmt="PNG"), **LIMITS).image
    assert encode_jpeg(img, 95) == encode_jpeg(img, 95)
