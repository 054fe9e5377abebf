"""Resources of the data side (per image batch): the raw source, where outputs go, how to annotate.

- ``raw_source``: :class:`RawSourceResource`, a local folder or ``s3://`` prefix whose direct subfolders
  are image batches (default ``settings.raw_url()``, filled with the bundled sample's first batch);
- ``data``: :class:`DataStoreResource`, the base of every output, one fresh folder per materialisation
  ``<base>/<asset>/<partition>/<UTC time>-<run id>/`` and a retention of the last ``keep_versions``;
- ``annotation``: :class:`AnnotationResource`, the ``AnnotateConfig`` the three annotation stages share.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from dagster import ConfigurableResource
from pydantic import Field

from fgclip_core import storage
from orchestration import settings

log = logging.getLogger(__name__)


class RawSourceResource(ConfigurableResource):
    """Where the user's images land: ``<url>/<batch>/`` with images and an optional metadata.jsonl."""

    url: str | None = Field(default=None, description="local folder or s3:// prefix; default $FGCLIP_RAW_URL or "
                                                      "<FGCLIP_HOME>/raw/incoming (the sample batches)")

    def resolved_url(self) -> str:
        url = self.url or settings.raw_url()
        return url if storage.is_remote(url) else str(storage.filesystem(url)[1])

    def uses_sample(self) -> bool:
        return self.url is None and settings.raw_url_is_default()

    def batches(self) -> dict[str, str]:
        """Batch name -> fingerprint. The default source gets the sample's first batch when it has none."""
        from fgclip_core.annotate.raw_batches import list_batches
        from fgclip_core.sample.batches import land_sample_batch

        url = self.resolved_url()
        found = list_batches(url)
        if not found and self.uses_sample():
            land_sample_batch(url, 1)
            found = list_batches(url)
        return found

    def batch_url(self, batch: str) -> str:
        return storage.join(self.resolved_url(), batch)


class DataStoreResource(ConfigurableResource):
    """The base folder/URL of every data output and how many versions of a partition are kept."""

    base_url: str | None = Field(default=None, description="default $FGCLIP_DATA_URL or <FGCLIP_HOME>/data")
    keep_versions: int = Field(default=3, ge=1, description="versions kept per asset and partition (newest)")

    def resolved_url(self) -> str:
        url = self.base_url or settings.data_url()
        return url if storage.is_remote(url) else str(storage.filesystem(url)[1])

    def new_version(self, asset: str, partition: str, run_id: str) -> str:
        """A folder no other materialisation writes: sortable by time, unique by run id."""
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
        return storage.join(self.resolved_url(), asset, partition, f"{stamp}-{run_id[:8]}")

    @contextmanager
    def writing(self, asset: str, partition: str, run_id: str) -> Iterator[str]:
        """A new version folder for the body of the ``with``; removed again when the body raises, so a
        failed attempt leaves nothing a later reader or the retention count could take for a version."""
        url = self.new_version(asset, partition, run_id)
        try:
            yield url
        except BaseException:
            fs, path = storage.filesystem(url)
            if fs.exists(path):
                fs.rm(path, recursive=True)
            raise

    def prune(self, asset: str, partition: str, keep_url: str) -> list[str]:
        """Remove all but the newest ``keep_versions`` versions (never ``keep_url``); returns what was removed."""
        fs, base = storage.filesystem(storage.join(self.resolved_url(), asset, partition))
        if not fs.exists(base):
            return []
        versions = sorted(p.rstrip("/") for p in fs.ls(base, detail=False))
        keep_path = storage.filesystem(keep_url)[1].rstrip("/")
        old = [p for p in versions[: max(0, len(versions) - self.keep_versions)] if p != keep_path]
        for p in old:
            fs.rm(p, recursive=True)
            log.info("retention: removed %s", p)
        return old


class AnnotationResource(ConfigurableResource):
    """The annotation settings of every batch (one ``AnnotateConfig`` for the three stages)."""

    captions_backend: Literal["sidecar", "openai", "hf_local"] = Field(
        default="sidecar", description="sidecar: the batch's metadata.jsonl or <image>.txt; openai: an endpoint")
    box_backend: Literal["auto", "none", "metadata", "hf_local", "openai"] = Field(
        default="auto", description="auto: the boxes in the batch's metadata.jsonl when it has one, else none")
    overrides: list[str] = Field(default_factory=list,
                                 description="more AnnotateConfig `key=value` settings (endpoint.base_url=...)")

    def config(self, images_root: str):
        from fgclip_core.annotate.config import load_annotate_config
        from fgclip_core.annotate.raw_batches import METADATA_NAME

        metadata = storage.join(images_root, METADATA_NAME)
        fs, path = storage.filesystem(metadata)
        has_metadata = fs.exists(path)
        boxes = self.box_backend if self.box_backend != "auto" else ("metadata" if has_metadata else "none")
        overrides = [f"captions.backend={self.captions_backend}", f"boxes.backend={boxes}"]
        if has_metadata:
            overrides.append(f"captions.metadata_file={metadata}")
            if boxes == "metadata":
                overrides.append(f"boxes.metadata_file={metadata}")
        return load_annotate_config(None, [*overrides, *self.overrides])
