"""Versioned output folders of the model-side assets: ``<data>/<asset>/<run id>[-retryN]/``.

Each materialisation gets a folder of its own (two concurrent runs never share one; a retried step
gets another), hands downstream a reference to it, and never writes into it again. Older folders
stay until ``keep`` newer ones exist; folders a current reference points at are never removed, and
only folders this store made (marked with ``.fgclip-version``) are ever deleted.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from fgclip_core import storage
from orchestration import settings

MARKER = ".fgclip-version"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class OutputStoreResource(ConfigurableResource):
    """Where the model-side assets write (default: ``settings.data_url()``) and how many versions stay."""

    root: str | None = Field(default=None, description="local folder or URL; default FGCLIP_DATA_URL or .fgclip/data")
    keep: int | None = Field(default=None, ge=1, description="versions kept per asset; default FGCLIP_KEEP_VERSIONS (5)")

    def base(self) -> str:
        root = self.root or settings.data_url()
        return root if storage.is_remote(root) else str(Path(root).resolve())

    def local_base(self, what: str) -> Path:
        base = self.base()
        if storage.is_remote(base):
            raise NotImplementedError(f"{base}: {what} needs a local data root for now (set FGCLIP_DATA_URL to a path)")
        return Path(base)

    def new_dir(self, asset: str, run_id: str, retry: int = 0) -> Path:
        """A fresh folder for this run (and retry) of ``asset``; refuses one that already exists."""
        name = _SAFE.sub("_", run_id) + (f"-retry{retry}" if retry else "")
        path = self.local_base(asset) / asset / name
        path.mkdir(parents=True, exist_ok=False)
        (path / MARKER).write_text(f"{asset} {run_id} {retry}\n")
        return path

    def prune(self, asset: str, protect: set[str] | frozenset[str] = frozenset()) -> list[Path]:
        """Remove the oldest marked folders of ``asset`` beyond ``keep``, never one in ``protect``
        (or containing/inside a protected path). Returns what was removed."""
        keep = self.keep or settings.keep_versions()
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
