"""Reading shard tars: a plain-ustar fast reader (one header read and one data read per member),
``tarfile`` taking over from where it stops on anything else, and WebDataset-style grouping of
members into samples. Each shard can be checked against its manifest entry while it streams
(``data.shard_check``)."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import Any

from fgclip_core.data.atomic import resolve
from fgclip_core.data.shard_check import ShardCheck


class _NotPlain(Exception):
    """A tar header the fast reader leaves to ``tarfile`` (anything but a plain ustar file or folder)."""


_TAR_BLOCK = 512
_ZERO_BLOCK = bytes(_TAR_BLOCK)


def _tarfile_members(fs: Any, path: str, skip: int = 0, check: ShardCheck | None = None) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the regular files of a tar, read by ``tarfile`` (after skipping ``skip`` of them)."""
    with fs.open(path, "rb") as raw:
        fh = raw if check is None else check.wrap(raw)
        try:
            with tarfile.open(fileobj=fh, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    if skip:
                        skip -= 1
                        continue
                    f = tar.extractfile(member)
                    yield member.name, f.read() if f is not None else b""
        except (tarfile.TarError, EOFError, ValueError):
            if check is not None:
                check.finish()   # a damaged shard: ShardCorrupt from here when its bytes are not the manifest's
            raise
        if check is not None:
            check.finish()


def _fast_members(fh: Any) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the regular files of a plain ustar stream: one header read and one data read
    per member (``tarfile`` costs ~6x more per member). Raises ``_NotPlain`` on anything else: end of
    data where a header or member should be, a bad checksum, base-256 sizes, pax / GNU / link
    members; the caller then hands the rest to ``tarfile``, which does what it always did."""
    first = True
    while True:
        h = fh.read(_TAR_BLOCK)
        if len(h) != _TAR_BLOCK or (first and h == _ZERO_BLOCK):
            raise _NotPlain("short header")
        if h == _ZERO_BLOCK:   # end of archive (tarfile stops at the first zero block too)
            return
        first = False
        kind = h[156:157]
        if kind not in (b"0", b"\0", b"5") or h[124] & 0x80:
            raise _NotPlain("not a plain file or folder")
        try:
            size = int(h[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            chksum = int(h[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError as e:
            raise _NotPlain("bad number field") from e
        if chksum != 256 + sum(h[:148]) + sum(h[156:]):
            raise _NotPlain("checksum")
        name = h[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if h[257:265] == b"ustar\x0000":
            prefix = h[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix.decode("utf-8", "surrogateescape") + "/" + name
        pad = -size % _TAR_BLOCK
        data = fh.read(size) if size else b""   # the member exactly: no second copy without its padding
        if len(data) != size or (pad and len(fh.read(pad)) != pad):
            raise _NotPlain("short data")
        if kind == b"5" or name.endswith("/"):
            continue
        yield name, data


def _tar_members(fs: Any, path: str, check: ShardCheck | None = None) -> Iterator[tuple[str, bytes]]:
    """The regular files of a tar, exactly as ``tarfile`` reads them (same members, same errors), by
    the fast reader as long as the stream is plain ustar, then by ``tarfile`` from where it stopped.
    ``check``: the file's size is compared first, its bytes are hashed as they are read and compared
    at the end (``ShardCorrupt``)."""
    if check is not None:
        check.check_size(fs, path)
    done = 0
    with fs.open(path, "rb") as raw:
        fh = raw if check is None else check.wrap(raw)
        try:
            for member in _fast_members(fh):
                yield member
                done += 1
            if check is not None:
                check.finish()
            return
        except _NotPlain:
            pass
    yield from _tarfile_members(fs, path, skip=done, check=check)


def iter_tar_samples(url: str, fs: Any = None, check: ShardCheck | None = None) -> Iterator[dict[str, Any]]:
    """Group consecutive tar members by key (WebDataset rules: key = name up to the first dot of the
    basename). Yields ``{"__key__": key, "__url__": url, ext: bytes, ...}``; raises on a bad tar, and
    ``ShardCorrupt`` when ``check`` finds the shard is not its manifest entry."""
    fs, path = resolve(url, fs)
    current: dict[str, Any] | None = None
    for name, data in _tar_members(fs, path, check):
        dirname, _, base = name.rpartition("/")
        if "." not in base:
            continue
        stem, ext = base.split(".", 1)
        key = f"{dirname}/{stem}" if dirname else stem
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key, "__url__": url}
        current[ext.lower()] = data
    if current is not None:
        yield current
