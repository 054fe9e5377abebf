"""Atomic writes through fsspec: write a temporary name next to the target, then move it in place.

On a local filesystem the move is ``os.replace`` (atomic within a folder); on an object store
(s3fs) the temporary object is complete before it is copied to the final key, so a reader never
sees a partial object under the final name. A failure removes the temporary file; a killed
process leaves only a ``_tmp.*`` name, which no reader takes and ``remove_stale_temps`` clears.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import IO, Any

from fgclip_core import storage

TMP_PREFIX = "_tmp."


def temp_name(path: str) -> str:
    head, _, tail = path.rpartition("/")
    name = f"{TMP_PREFIX}{tail}.{uuid.uuid4().hex[:12]}"
    return f"{head}/{name}" if head else name


def resolve(url: str, fs: Any = None) -> tuple[Any, str]:
    """``(fs, path)`` for ``url``, reusing ``fs`` when given (one client per run: creating an s3fs
    client costs a round of requests)."""
    if fs is None:
        return storage.filesystem(url)
    return fs, fs._strip_protocol(url)


class AtomicWriter:
    """A file written under a temporary name next to ``url``; ``commit()`` moves it in place, under
    ``url`` or under a name chosen only once the content is known (a content-addressed shard name);
    ``discard()`` removes it. Not committed = never visible under a final name."""

    def __init__(self, url: str, mode: str = "wb", fs: Any = None, **kwargs: Any) -> None:
        if not mode.startswith("w"):
            raise ValueError(f"atomic writes only, got mode {mode!r}")
        self.url = url
        self.fs, path = resolve(url, fs)
        parent = path.rpartition("/")[0]
        if parent and not storage.is_remote(url):  # object stores have no folders (and buckets are not ours to create)
            self.fs.makedirs(parent, exist_ok=True)
        self.tmp = temp_name(path)
        self.fh: IO[Any] = self.fs.open(self.tmp, mode, **kwargs)

    def commit(self, url: str | None = None) -> str:
        """Close and move to ``url`` (default: the url given at creation, same folder expected)."""
        final = url or self.url
        path = resolve(final, self.fs)[1]
        self.fh.close()
        if storage.is_remote(final):
            self.fs.mv(self.tmp, path)
        else:
            os.replace(self.tmp, path)
        return final

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.fh.close()
        with contextlib.suppress(Exception):
            self.fs.rm(self.tmp)


@contextlib.contextmanager
def atomic_open(url: str, mode: str = "wb", fs: Any = None, **kwargs: Any) -> Iterator[IO[Any]]:
    """Open ``url`` for writing; the content appears under ``url`` only if the block succeeds."""
    w = AtomicWriter(url, mode, fs, **kwargs)
    try:
        yield w.fh
        w.commit()
    except BaseException:
        w.discard()
        raise


def remove_stale_temps(url: str, fs: Any = None) -> int:
    """Delete leftovers of killed writers directly inside folder ``url``; returns how many."""
    fs, path = resolve(url, fs)
    if not fs.exists(path):
        return 0
    stale = [p for p in fs.ls(path, detail=False) if p.rsplit("/", 1)[-1].startswith(TMP_PREFIX)]
    for p in stale:
        fs.rm(p)
    return len(stale)
