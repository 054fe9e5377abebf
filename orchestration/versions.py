"""Versioned output folders of the model-side assets: ``<data>/<asset>/<run id>[-retryN]/``.

Each materialisation gets a folder of its own (two concurrent runs never share one; a retried step
gets another), hands downstream a reference to it, and never writes into it again. Older folders
stay until ``keep`` newer ones exist; folders a current reference points at are never removed, and
only folders this store made (marked with ``.fgclip-version``) are ever deleted.

Two forms, one interface (:meth:`OutputStoreResource.version`, :meth:`~OutputStoreResource.publish`):

- local data root: the step writes straight into its version folder (``Version.local`` is the folder);
- ``s3://`` data URL: the trainer and the evaluator write local files, so the step writes into a
  scratch folder of its own (``settings.scratch_dir()``, removed when the step ends, failed or not);
  ``publish`` copies the named outputs to ``<data>/<asset>/<run id>/`` (same relative layout) and
  then writes ``.fgclip-complete`` last, atomically. The version marker is written first, so a
  version whose upload broke off is still one this store may prune.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from fgclip_core import storage
from fgclip_core.data.atomic import atomic_open
from orchestration import settings

MARKER = ".fgclip-version"
COMPLETE = ".fgclip-complete"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Version:
    """One materialisation's output: the step writes under ``local``; ``url`` is where it is read from
    (the same folder in the local form, ``<data>/<asset>/<name>`` on S3)."""

    local: Path
    url: str

    @property
    def remote(self) -> bool:
        return storage.is_remote(self.url)

    def url_of(self, path: str | Path) -> str:
        """Where ``path`` (under ``local``) is read from once published; local paths are kept as given."""
        if not self.remote:
            return str(path)
        rel = Path(path).resolve().relative_to(self.local.resolve()).as_posix()
        return self.url if rel == "." else storage.join(self.url, rel)


class OutputStoreResource(ConfigurableResource):
    """Where the model-side assets write (default: ``settings.data_url()``) and how many versions stay."""

    root: str | None = Field(default=None, description="local folder or s3:// URL; default FGCLIP_DATA_URL or "
                                                       ".fgclip/data")
    keep: int | None = Field(default=None, ge=1, description="versions kept per asset; default FGCLIP_KEEP_VERSIONS (5)")

    def base(self) -> str:
        root = self.root or settings.data_url()
        return root if storage.is_remote(root) else str(Path(root).resolve())

    def local_base(self, what: str) -> Path:
        base = self.base()
        if storage.is_remote(base):
            raise NotImplementedError(f"{base}: {what} needs a local data root (use OutputStoreResource.version)")
        return Path(base)

    @staticmethod
    def _name(run_id: str, retry: int) -> str:
        return _SAFE.sub("_", run_id) + (f"-retry{retry}" if retry else "")

    def new_dir(self, asset: str, run_id: str, retry: int = 0) -> Path:
        """A fresh local folder for this run (and retry) of ``asset``; refuses one that already exists."""
        path = self.local_base(asset) / asset / self._name(run_id, retry)
        path.mkdir(parents=True, exist_ok=False)
        (path / MARKER).write_text(f"{asset} {run_id} {retry}\n")
        return path

    @contextmanager
    def version(self, asset: str, run_id: str, retry: int = 0) -> Iterator[Version]:
        """A fresh version of ``asset`` for the body of the ``with`` (see the module docstring)."""
        base = self.base()
        if not storage.is_remote(base):
            path = self.new_dir(asset, run_id, retry)
            yield Version(local=path, url=str(path))
            return
        url = storage.join(base, asset, self._name(run_id, retry))
        fs, path = storage.filesystem(url)
        if fs.exists(f"{path}/{MARKER}"):
            raise FileExistsError(f"{url}: this version exists already")
        with atomic_open(storage.join(url, MARKER), "w", fs=fs) as f:
            f.write(json.dumps({"asset": asset, "run_id": run_id, "retry": retry, "created_ns": time.time_ns()}))
        scratch_root = settings.scratch_dir()
        scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{asset.replace('/', '_')}-{self._name(run_id, retry)}-",
                                        dir=scratch_root))
        try:
            yield Version(local=scratch, url=url)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def publish(self, version: Version, *outputs: str) -> list[str]:
        """Copy ``outputs`` (paths relative to ``version.local``: files or folders) to ``version.url``,
        then write the completion marker; a no-op in the local form. Returns the object URLs written."""
        if not version.remote:
            return []
        fs, root = storage.filesystem(version.url)
        written = []
        for rel in outputs:
            src = version.local / rel
            if not src.exists():
                raise FileNotFoundError(f"{src}: output to publish not found")
            files = [src] if src.is_file() else sorted(f for f in src.rglob("*") if f.is_file())
            for f in files:
                key = f.relative_to(version.local).as_posix()
                fs.put_file(str(f), f"{root}/{key}")
                written.append(storage.join(version.url, key))
        with atomic_open(storage.join(version.url, COMPLETE), "w", fs=fs) as fh:
            fh.write(json.dumps({"outputs": list(outputs), "objects": len(written)}))
        return written

    def is_complete(self, url: str) -> bool:
        """Whether the version folder holding ``url`` was fully published (always true for local paths)."""
        base = self.base()
        if not storage.is_remote(url) or not url.startswith(base.rstrip("/") + "/"):
            return True
        fs, path = storage.filesystem(url)
        parts = path.rstrip("/").split("/")
        depth = len(url[len(base.rstrip("/")) + 1:].rstrip("/").split("/"))
        # <asset>/<name>/... or <asset>/<partition>/<name>/...: the nearest folder up that has the version marker
        for n in range(len(parts), len(parts) - depth, -1):
            folder = "/".join(parts[:n])
            if fs.exists(f"{folder}/{MARKER}"):
                return bool(fs.exists(f"{folder}/{COMPLETE}"))
        return True

    def require_complete(self, url: str, what: str) -> None:
        if not self.is_complete(url):
            raise FileNotFoundError(f"{what}: {url} was not completely published (no {COMPLETE}): "
                                    f"materialise it again")

    def prune(self, asset: str, protect: set[str] | frozenset[str] = frozenset()) -> list:
        """Remove the oldest marked versions of ``asset`` beyond ``keep``, never one in ``protect``
        (or containing/inside a protected path). Returns what was removed (paths, or URLs on S3)."""
        keep = self.keep or settings.keep_versions()
        if storage.is_remote(self.base()):
            return self._prune_remote(asset, protect, keep)
        parent = self.local_base(asset) / asset
        if not parent.is_dir():
            return []
        mine = sorted((p for p in parent.iterdir() if (p / MARKER).is_file()), key=lambda p: p.stat().st_mtime,
                      reverse=True)
        guarded = [Path(u).resolve() for u in protect if not storage.is_remote(u)]
        removed = []
        for p in mine[keep:]:
            rp = p.resolve()
            if any(g == rp or rp in g.parents for g in guarded):
                continue
            shutil.rmtree(p)
            removed.append(p)
        return removed

    def _prune_remote(self, asset: str, protect: set[str] | frozenset[str], keep: int) -> list[str]:
        parent_url = storage.join(self.base(), asset)
        fs, parent = storage.filesystem(parent_url)
        if not fs.exists(parent):
            return []
        mine = []
        for entry in fs.ls(parent, detail=True):
            folder = entry["name"].rstrip("/")
            if entry.get("type") != "directory" or not fs.exists(f"{folder}/{MARKER}"):
                continue
            try:
                created = int(json.loads(fs.cat_file(f"{folder}/{MARKER}")).get("created_ns", 0))
            except (ValueError, AttributeError):
                created = 0
            mine.append((created, folder))
        mine.sort(reverse=True)
        guarded = [storage.filesystem(u)[1].rstrip("/") for u in protect if storage.is_remote(u)]
        removed = []
        for _, folder in mine[keep:]:
            if any(g == folder or g.startswith(folder + "/") or folder.startswith(g + "/") for g in guarded):
                continue
            fs.rm(folder, recursive=True)
            removed.append(storage.join(parent_url, folder.rsplit("/", 1)[-1]))
        return removed
