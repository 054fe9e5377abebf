"""Reading a record's image file safely: inside the image root, a regular file, bounded in size.

Every place that opens a file named by a record (``f_path``) goes through ``ImageRoot.read``:
validation and shard building (``data.validate``), the annotation stages (``annotate.images``,
sidecar captions). What it refuses, as ``RecordError``:

- ``image_outside_root``: ``f_path`` is absolute, a URL (another bucket, another scheme), has a
  ``..`` component, or (local roots) resolves, symlinks included, to a place outside the real path
  of the root (``rootlink -> /`` with ``f_path: rootlink/etc/passwd``);
- ``image_not_regular_file``: a FIFO, a device (``zero.jpg -> /dev/zero`` inside the root), a
  socket or a folder. Checked with ``stat`` before opening (a FIFO is never opened), and again on
  the open descriptor (the file may be swapped in between);
- ``image_too_large``: more bytes than ``max_bytes``, from the size the filesystem reports before
  reading (sparse files included), and again from a read of at most ``max_bytes + 1`` bytes;
- ``image_missing``: absent or unreadable.

Without a root (``root=None``) the current folder is the root.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from fgclip_core import storage
from fgclip_core.data.errors import Reason, RecordError

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def check_relative_path(f_path: str) -> None:
    """Lexical check of a record's ``f_path`` (no file access). Raises ``RecordError``."""
    if "\x00" in f_path:
        raise RecordError(Reason.RECORD_MALFORMED, f"f_path {f_path[:200]!r} holds a NUL character")
    norm = f_path.replace("\\", "/")
    if "://" in norm:
        raise RecordError(Reason.IMAGE_OUTSIDE_ROOT,
                          f"f_path {f_path[:200]!r} is a URL; it must be relative to the image root")
    if norm.startswith("/"):
        raise RecordError(Reason.IMAGE_OUTSIDE_ROOT,
                          f"f_path {f_path[:200]!r} is absolute; it must be relative to the image root")
    if ".." in norm.split("/"):
        raise RecordError(Reason.IMAGE_OUTSIDE_ROOT, f"f_path {f_path[:200]!r} has a '..' component")


def _too_large(where: str, size: int | str, limit: int) -> RecordError:
    return RecordError(Reason.IMAGE_TOO_LARGE, f"{where} is {size} bytes > max_image_bytes {limit}")


class ImageRoot:
    """The folder or URL that records' ``f_path`` values are relative to, and the one safe reader.

    Picklable (process pools): a remote filesystem client is made on first use in each process.
    """

    def __init__(self, root: str | None, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.root = root
        self.max_bytes = max_bytes
        self.remote = root is not None and storage.is_remote(root)
        self._fs: Any = None
        if self.remote:
            assert root is not None
            self._base = root.split("://", 1)[1].rstrip("/")
            self._real = ""
        else:
            local = os.getcwd() if root is None else (root[len("file://"):] if root.startswith("file://") else root)
            self._real = os.path.realpath(local)
            self._base = self._real

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fs"] = None   # never share a filesystem client across processes
        return state

    def url(self, f_path: str) -> str:
        """Where ``f_path`` points, for messages."""
        return storage.join(self.root, f_path) if self.root else f_path

    def read(self, f_path: str, max_bytes: int | None = None) -> bytes:
        """The bytes of ``f_path`` under the root, or ``RecordError`` (see the module docstring)."""
        check_relative_path(f_path)
        limit = self.max_bytes if max_bytes is None else max_bytes
        return self._read_remote(f_path, limit) if self.remote else self._read_local(f_path, limit)

    # -- local -------------------------------------------------------------------------------------
    def resolve_local(self, f_path: str) -> str:
        """The real path of ``f_path`` (symlinks resolved); ``image_outside_root`` if it leaves the root."""
        check_relative_path(f_path)
        real = os.path.realpath(os.path.join(self._real, f_path))
        if real != self._real and os.path.commonpath([self._real, real]) != self._real:
            raise RecordError(Reason.IMAGE_OUTSIDE_ROOT,
                              f"{self.url(f_path)} resolves to {real}, outside the image root {self._real}")
        return real

    def _read_local(self, f_path: str, limit: int) -> bytes:
        return read_local_file(self.resolve_local(f_path), limit, self.url(f_path))

    # -- object stores ---------------------------------------------------------------------------
    def _read_remote(self, f_path: str, limit: int) -> bytes:
        path = f"{self._base}/{f_path}"
        if not path.startswith(self._base + "/"):   # cannot happen after check_relative_path; kept as the invariant
            raise RecordError(Reason.IMAGE_OUTSIDE_ROOT, f"{self.url(f_path)} is outside the image root {self.root}")
        if self._fs is None:
            self._fs = storage.filesystem(self.root)[0]   # type: ignore[arg-type]
        return read_object(self._fs, path, limit, self.url(f_path))


def _check_stat(where: str, st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a named pipe" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise RecordError(Reason.IMAGE_NOT_REGULAR_FILE, f"{where} is {kind}, not a regular file")
    if st.st_size > limit:
        raise _too_large(where, st.st_size, limit)


def read_local_file(path: str, limit: int, where: str | None = None) -> bytes:
    """At most ``limit`` bytes of a local regular file (no containment check: ``ImageRoot`` does that).
    A FIFO or device is refused from ``stat``, before it is opened; the open descriptor is checked
    again, and the read is bounded whatever the size claimed."""
    where = where or path
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise RecordError(Reason.IMAGE_MISSING, f"{where} does not exist") from e
    except OSError as e:
        raise RecordError(Reason.IMAGE_MISSING, f"{where} cannot be read: {e}") from e
    _check_stat(where, st, limit)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:   # vanished, permissions, or became a symlink since the check (O_NOFOLLOW)
        raise RecordError(Reason.IMAGE_MISSING, f"{where} cannot be opened: {e}") from e
    with os.fdopen(fd, "rb") as fh:
        _check_stat(where, os.fstat(fd), limit)
        try:
            data = fh.read(limit + 1)
        except OSError as e:
            raise RecordError(Reason.IMAGE_MISSING, f"{where} cannot be read: {e}") from e
    if len(data) > limit:
        raise _too_large(where, f"more than {limit}", limit)
    return data


def read_object(fs: Any, path: str, limit: int, where: str | None = None) -> bytes:
    """At most ``limit`` bytes of one object of an fsspec filesystem, its size checked from
    ``info()`` before any byte is read."""
    where = where or path
    try:
        info = fs.info(path)
    except FileNotFoundError as e:
        raise RecordError(Reason.IMAGE_MISSING, f"{where} does not exist") from e
    except OSError as e:
        raise RecordError(Reason.IMAGE_MISSING, f"{where} cannot be read: {e}") from e
    if info.get("type") != "file":
        raise RecordError(Reason.IMAGE_NOT_REGULAR_FILE, f"{where} is a {info.get('type')}, not a file")
    size = info.get("size")
    if not isinstance(size, int) or size > limit:
        raise _too_large(where, size if isinstance(size, int) else "an unknown number of", limit)
    try:
        with fs.open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError as e:
        raise RecordError(Reason.IMAGE_MISSING, f"{where} does not exist") from e
    except OSError as e:
        raise RecordError(Reason.IMAGE_MISSING, f"{where} cannot be read: {e}") from e
    if len(data) > limit:
        raise _too_large(where, f"more than {limit}", limit)
    return data
