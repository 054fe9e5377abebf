"""Reading benchmark files and images from a local folder or an S3 URL (through ``fgclip_core.storage``)."""

from __future__ import annotations

import io
import logging
import os
from functools import lru_cache
from pathlib import PurePosixPath

import fsspec
from PIL import Image, UnidentifiedImageError

from fgclip_core.data.config import MAX_IMAGE_BYTES
from fgclip_core.data.errors import Reason, RecordError
from fgclip_core.data.paths import read_local_file, read_object
from fgclip_core.storage import filesystem as _new_filesystem
from fgclip_core.storage import is_remote

log = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _remote_fs(protocol: str, pid: int, endpoint: str | None) -> fsspec.AbstractFileSystem:
    # One client per protocol, process and endpoint: making an S3 client costs ~0.5 s, and an
    # evaluation reads thousands of images. Keyed by pid because s3fs is not fork-safe.
    return _new_filesystem(f"{protocol}://x")[0]


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    if not is_remote(url):
        return _new_filesystem(url)
    protocol, path = url.split("://", 1)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return _remote_fs(protocol, os.getpid(), endpoint), path


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


_UNDECODABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def read_image_bytes(url: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes | None:
    """The file's bytes, or ``None`` when it does not exist, or is not a regular file / object of at
    most ``max_bytes`` (a FIFO, a device, a folder, a sparse giant: one WARNING line each, never
    opened or read unbounded: ``data.paths``). Other I/O errors propagate."""
    try:
        if is_remote(url):
            fs, path = filesystem(url)
            return read_object(fs, path, max_bytes, url)
        local = url[len("file://"):] if url.startswith("file://") else url
        return read_local_file(os.path.realpath(local), max_bytes, url)
    except RecordError as e:
        if e.reason == Reason.IMAGE_MISSING:
            if "does not exist" in e.detail:
                return None
            raise OSError(e.detail) from e
        log.warning("image refused: %s", e)
        return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the header only, or ``None`` when it is not an image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except _UNDECODABLE:
        return None


def decode_image(data: bytes) -> Image.Image | None:
    """Fully decoded RGB image, or ``None`` when the bytes are not a readable image."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img.convert("RGB")
    except _UNDECODABLE:
        return None


def open_image(url: str) -> Image.Image | None:
    """RGB image, or ``None`` when the file is missing or cannot be decoded (the caller counts it)."""
    data = read_image_bytes(url)
    return decode_image(data) if data is not None else None
