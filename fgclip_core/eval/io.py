"""Reading benchmark files and images from a local folder or an S3 URL (through ``fgclip_core.storage``)."""

from __future__ import annotations

import io
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError

from fgclip_core.storage import filesystem, is_remote


def join(root: str, rel: str) -> str:
    """``root/rel``; an absolute ``rel`` (or a URL) is returned unchanged."""
    if "://" in rel or rel.startswith("/"):
        return rel
    if not root:
        return rel
    return root.rstrip("/") + "/" + rel.lstrip("/")


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return f.read()


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return bool(fs.exists(path))


def is_dir(url: str) -> bool:
    fs, path = filesystem(url)
    return bool(fs.isdir(path))


def list_names(url: str) -> list[str]:
    """Sorted base names of the entries directly under ``url``."""
    fs, path = filesystem(url)
    return sorted(PurePosixPath(p.rstrip("/")).name for p in fs.ls(path, detail=False))


def open_image(url: str) -> tuple[Image.Image, bytes] | None:
    """RGB image and its raw bytes, or ``None`` when the file is missing or cannot be decoded.

    The caller counts and reports ``None`` (a missing image never aborts an evaluation).
    """
    try:
        data = read_bytes(url)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    except OSError:
        if is_remote(url):
            return None
        raise
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    return img.convert("RGB"), data
