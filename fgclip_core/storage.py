"""One place that turns a path or URL into an fsspec filesystem.

Local paths and ``file://`` go to the local filesystem; ``s3://`` goes through s3fs and honours
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for S3-compatible stores such as MinIO or a
loopback ``moto_server``. Create filesystems where they are used (DataLoader workers create their
own): an s3fs instance is not fork-safe.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def filesystem(url: str, **kwargs: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(fs, path)`` for ``url``; ``path`` is what ``fs`` methods expect."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol in ("s3", "s3a"):
        ep = endpoint_url()
        if ep:
            client_kwargs = dict(kwargs.pop("client_kwargs", {}) or {})
            client_kwargs.setdefault("endpoint_url", ep)
            kwargs["client_kwargs"] = client_kwargs
        # A fresh instance per call site: s3fs caches instances, which breaks across forks.
        kwargs.setdefault("skip_instance_cache", True)
        fs = fsspec.filesystem("s3", **kwargs)
        return fs, url.split("://", 1)[1]
    fs, path = fsspec.core.url_to_fs(url, **kwargs)
    return fs, path


def join(url: str, *parts: str) -> str:
    """Join URL/path parts with '/' (works for local paths and URLs alike)."""
    out = url.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out
