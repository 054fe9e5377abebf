"""The annotation as three stages, each reading the previous stage's output (the Dagster assets
``long_captions`` -> ``region_boxes`` -> ``hard_negatives``); ``Annotator.run`` still does all three per
chunk for ``fgclip annotate``.

Every stage writes, under its own ``out`` (a local folder or an fsspec URL, never shared):

- ``records/chunk-NNNNN.jsonl``: the records this stage passed on (``FineHARDRecord.to_dict()`` lines);
- ``quarantine/chunk-NNNNN.jsonl``: ``{"id", "f_path", "stage", "reason", "record"}`` per record it stopped;
- ``summary.json``: the counts (:class:`StageSummary`).

Every input (an image for ``captions``, a record for the others) ends up in exactly one of the two.
An endpoint (captions, boxes or LLM negatives) that answers nothing usable for a whole chunk is not bad
data: the stage raises :class:`EndpointUnavailableError` naming the endpoint (the orchestrator retries,
then fails the batch); when only some requests fail, those records are quarantined as usual.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fgclip_core.annotate.config import AnnotateConfig
from fgclip_core.annotate.images import ImageRef, list_images
from fgclip_core.annotate.pipeline import STAGES, Annotator, Pair, Quarantined, _write_jsonl, read_records
from fgclip_core.data.records import FineHARDRecord
from fgclip_core.storage import filesystem, join

RECORDS_DIR = "records"
QUARANTINE_DIR = "quarantine"
SUMMARY_NAME = "summary.json"


class EndpointUnavailableError(RuntimeError):
    """The annotation endpoint answered no request of a chunk: the message names it and the last error."""


@dataclass
class StageSummary:
    stage: str
    inputs: int = 0
    records: int = 0
    quarantined: int = 0
    regions: int = 0
    regions_with_negatives: int = 0
    quarantined_by_stage: dict[str, int] = field(default_factory=dict)
    sha256: str = ""  # of the records written, in order (what the next stage reads)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _refs_for(records: Sequence[FineHARDRecord], images_root: str) -> list[ImageRef]:
    base = filesystem(images_root)[1].rstrip("/")
    return [ImageRef(r.id, r.f_path, join(images_root, r.f_path), f"{base}/{r.f_path}") for r in records]


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i: i + size] for i in range(0, len(items), size)]


def uses_endpoint(cfg: AnnotateConfig, stage: str) -> bool:
    """Whether ``stage`` asks the annotation endpoint (``endpoint.base_url``) with this config."""
    return {"captions": cfg.captions.backend == "openai", "regions": cfg.boxes.backend == "openai",
            "negatives": cfg.negatives.backend == "llm"}[stage]


_WHAT = {"captions": "caption", "regions": "box", "negatives": "negatives"}


def _endpoint_check(cfg: AnnotateConfig, stage: str, asked: int, answered: int,
                    quarantine: list[Quarantined]) -> None:
    """A stage that asked the endpoint ``asked`` times and got nothing usable: the endpoint is down
    (or misconfigured), not the data; raise naming it instead of quarantining the whole chunk."""
    if not uses_endpoint(cfg, stage) or not asked or answered:
        return
    quarantined_stage = "boxes" if stage == "regions" else stage
    last = next((q.reason for q in reversed(quarantine) if q.stage == quarantined_stage), "no answer")
    raise EndpointUnavailableError(
        f"{_WHAT[stage]} endpoint {cfg.endpoint.base_url} (model {cfg.endpoint.model!r}) answered none of "
        f"{asked} request(s) of this chunk: {last}")


class StageRunner:
    """Runs one stage over its input and writes the layout above under ``out``."""

    def __init__(self, stage: str, cfg: AnnotateConfig, images_root: str, out: str,
                 annotator: Annotator | None = None):
        if stage not in STAGES:
            raise ValueError(f"unknown annotation stage {stage!r}; expected one of {list(STAGES)}")
        self.stage, self.cfg, self.root, self.out = stage, cfg, images_root, out
        self.annotator = annotator or Annotator(cfg, images_root, out, stages=(stage,))
        self._hash = hashlib.sha256()

    def run(self, previous: str | None = None) -> StageSummary:
        """``previous``: the output folder of the stage before (required except for ``captions``)."""
        self.annotator._images_fs = filesystem(self.root)[0]
        self._out_fs, base = filesystem(self.out)
        self._base = base.rstrip("/")
        total = StageSummary(stage=self.stage)
        by_stage: Counter[str] = Counter()
        size = self.cfg.pipeline.chunk_size
        if self.stage == "captions":
            items: Sequence[Any] = list_images(self.root, self.cfg.pipeline.extensions)
        else:
            if previous is None:
                raise ValueError(f"stage {self.stage!r} reads the previous stage's output: give `previous`")
            items = read_records(previous)
        for ci, chunk in enumerate(_chunks(items, size) or [[]]):
            quarantine: list[Quarantined] = []
            records = self._one_chunk(chunk, quarantine)
            self._write(ci, records, quarantine)
            total.inputs += len(chunk)
            total.records += len(records)
            total.quarantined += len(quarantine)
            total.regions += sum(len(r.bbox_info) for r in records)
            total.regions_with_negatives += sum(g.flag_short_neg for r in records for g in r.bbox_info)
            by_stage.update(q.stage for q in quarantine)
        if total.records + total.quarantined != total.inputs:
            raise RuntimeError(f"{self.stage}: {total.inputs} in but {total.records} records + "
                               f"{total.quarantined} quarantined out")
        total.quarantined_by_stage = dict(sorted(by_stage.items()))
        total.sha256 = self._hash.hexdigest()
        _write_jsonl(self._out_fs, f"{self._base}/{SUMMARY_NAME}", [total.to_dict()])
        return total

    def _one_chunk(self, chunk: Sequence[Any], quarantine: list[Quarantined]) -> list[FineHARDRecord]:
        a = self.annotator
        if self.stage == "captions":
            loaded, undecodable = a._load(chunk)
            quarantine.extend(undecodable)
            captioned = a.caption_images(loaded, quarantine)
            _endpoint_check(self.cfg, "captions", len(loaded), len(captioned), quarantine)
            return [rec for _, rec in captioned]
        if self.stage == "regions":
            if a.detector is not None:  # a detector looks at the pictures: load them again
                loaded, undecodable = a._load(_refs_for(chunk, self.root))
                quarantine.extend(undecodable)
                by_id = {img.ref.id: img for img in loaded}
                pairs: list[Pair] = [(by_id[r.id], r) for r in chunk if r.id in by_id]
            else:
                pairs = [(None, r) for r in chunk]
            found = [rec for _, rec in a.add_regions(pairs, quarantine)]
            _endpoint_check(self.cfg, "regions", len(pairs), len(found), quarantine)
            return found
        kept = a.add_negatives(list(chunk), quarantine)
        _endpoint_check(self.cfg, "negatives", sum(bool(r.bbox_info) for r in chunk),
                        sum(bool(r.bbox_info) for r in kept), quarantine)
        return kept

    def _write(self, ci: int, records: list[FineHARDRecord], quarantine: list[Quarantined]) -> None:
        name = f"chunk-{ci:05d}.jsonl"
        rows = [r.to_dict() for r in records]
        for row in rows:
            self._hash.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode() + b"\n")
        _write_jsonl(self._out_fs, f"{self._base}/{RECORDS_DIR}/{name}", rows)
        _write_jsonl(self._out_fs, f"{self._base}/{QUARANTINE_DIR}/{name}", [asdict(q) for q in quarantine])


def run_stage(stage: str, cfg: AnnotateConfig, images_root: str, out: str, previous: str | None = None
              ) -> StageSummary:
    """One annotation stage: ``captions`` over the images under ``images_root``; ``regions`` and
    ``negatives`` over the records in ``previous`` (the earlier stage's ``out``)."""
    return StageRunner(stage, cfg, images_root, out).run(previous)
