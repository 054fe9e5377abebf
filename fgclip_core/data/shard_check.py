"""Checking a shard against its manifest entry while the loader reads it.

``ShardCheck`` compares the file's size with the manifest up front (``fs.size``: a missing or
truncated shard is caught before any of its samples is read), then hashes the bytes the tar reader
reads as it reads them, drains what the reader leaves (the tar's end blocks) and compares size and
sha256 at the end of the shard. ``buffered=True`` instead reads the whole shard into memory and
checks it before the reader sees a byte (``data.on_corrupt_shard=skip``: then no sample of a bad
shard is ever yielded, at the cost of one shard's bytes in memory).
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

from fgclip_core.data.shards import ShardInfo

_CHUNK = 1 << 20


class ShardCorrupt(Exception):
    """A shard does not match its manifest entry; ``reason``: missing | unreadable | size_mismatch |
    hash_mismatch; the message names the shard."""

    def __init__(self, url: str, reason: str, detail: str) -> None:
        super().__init__(f"{url}: {reason.replace('_', ' ')}: {detail}")
        self.url, self.reason, self.detail = url, reason, detail


class CorruptShardError(ValueError):
    """Training stops: a shard does not match the manifest and ``data.on_corrupt_shard`` is ``fail``."""


class _HashingReader:
    """``read()`` of ``fh`` that feeds every byte it returns to sha256 and counts them."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


class ShardCheck:
    """One shard's expected size and sha256; ``wrap`` each handle opened on it, ``finish`` at its end."""

    def __init__(self, url: str, expect: ShardInfo, buffered: bool = False) -> None:
        self.url, self.expect, self.buffered = url, expect, buffered
        self._reader: _HashingReader | None = None

    def check_size(self, fs: Any, path: str) -> None:
        try:
            size = fs.size(path)
        except FileNotFoundError as e:
            raise ShardCorrupt(self.url, "missing", f"listed in the manifest ({self.expect.bytes} bytes), "
                                                    "not found") from e
        except OSError as e:
            raise ShardCorrupt(self.url, "unreadable", f"{type(e).__name__}: {e}") from e
        if size != self.expect.bytes:
            raise ShardCorrupt(self.url, "size_mismatch", f"{size} bytes, manifest says {self.expect.bytes}")

    def _compare(self, size: int, sha: str) -> None:
        if size != self.expect.bytes:
            raise ShardCorrupt(self.url, "size_mismatch", f"{size} bytes read, manifest says {self.expect.bytes}")
        if sha != self.expect.sha256:
            raise ShardCorrupt(self.url, "hash_mismatch", f"sha256 {sha[:16]}..., manifest says "
                                                          f"{self.expect.sha256[:16]}...")

    def wrap(self, fh: Any) -> Any:
        """What the tar reader reads instead of ``fh`` (from the start of the file)."""
        if self.buffered:
            data = fh.read(self.expect.bytes + 1)   # bounded: the size was checked up front
            self._compare(len(data), hashlib.sha256(data).hexdigest())
            return io.BytesIO(data)
        self._reader = _HashingReader(fh)
        return self._reader

    def finish(self) -> None:
        """At the end of the tar (or after a read error): hash the rest of the file, then compare."""
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.drain()
            self._compare(reader.size, reader.sha.hexdigest())
