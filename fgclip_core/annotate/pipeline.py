"""Stage 4: run captions -> phrases -> boxes -> negatives over a folder of images, chunk by chunk.

Output layout under ``out`` (a local folder or an fsspec URL):

- ``records/chunk-NNNNN.jsonl``: one ``FineHARDRecord.to_dict()`` per line;
- ``quarantine/chunk-NNNNN.jsonl``: ``{"id", "f_path", "stage", "reason", "record"}`` per image
  that failed a stage (``record`` holds what was made before the failure, or null);
- ``_done/chunk-NNNNN.json``: written last; a re-run skips a chunk whose marker names the same
  images and the same config fingerprint, so an interrupted run resumes where it stopped;
- ``summary.json``: the counts of the last run.

Every image of the input ends up in exactly one of records or quarantine.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec
from tqdm import tqdm

from fgclip_core.annotate.boxes import Detector, select_regions, to_regions
from fgclip_core.annotate.captions import Captioner
from fgclip_core.annotate.config import AnnotateConfig
from fgclip_core.annotate.factory import (
    build_captioner,
    build_detector,
    build_negatives,
    build_region_metadata,
)
from fgclip_core.annotate.images import ImageLoadError, ImageRef, LoadedImage, list_images, load_image
from fgclip_core.annotate.negatives import NegativeGenerator
from fgclip_core.annotate.phrases import Phrase, RulePhraseExtractor
from fgclip_core.data.paths import ImageRoot
from fgclip_core.data.records import FineHARDRecord, Region
from fgclip_core.storage import filesystem, join

log = logging.getLogger(__name__)
FULL_NEGATIVES = 10  # the data contract: flag_short_neg=1 means exactly 10 negatives
WORKING_MAX_SIDE = 1024  # images are kept downscaled to this while annotating (boxes are normalised)


@dataclass
class Quarantined:
    id: str
    f_path: str
    stage: str
    reason: str
    record: dict[str, Any] | None = None


@dataclass
class Summary:
    images: int = 0
    records: int = 0
    quarantined: int = 0
    chunks: int = 0
    chunks_skipped: int = 0
    regions: int = 0
    regions_with_negatives: int = 0
    # boxes.backend=metadata: records whose image had no line in the metadata file (so no regions)
    records_without_region_metadata: int = 0
    quarantined_by_stage: dict[str, int] = field(default_factory=dict)

    def add(self, other: Summary) -> None:
        for k in ("images", "records", "quarantined", "regions", "regions_with_negatives",
                  "records_without_region_metadata"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        by = Counter(self.quarantined_by_stage)
        by.update(other.quarantined_by_stage)
        self.quarantined_by_stage = dict(by)


def _write_jsonl(fs: fsspec.AbstractFileSystem, path: str, rows: Sequence[dict[str, Any]]) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wt") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _read_json(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any] | None:
    if not fs.exists(path):
        return None
    with fs.open(path, "rt") as f:
        return json.load(f)


# Settings that change how fast or where the work runs, not what it produces: changing them keeps done chunks.
OPERATIONAL = {"endpoint": {"concurrency", "timeout_s", "connect_timeout_s", "max_retries", "backoff_base_s",
                            "backoff_max_s", "api_key_env"},
               "captions": {"batch_size", "device"}, "boxes": {"batch_size", "device"},
               "pipeline": {"chunk_size"}}


def config_fingerprint(cfg: AnnotateConfig) -> str:
    data = cfg.model_dump(mode="json", exclude=OPERATIONAL)  # type: ignore[arg-type]
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def assign_negatives(regions: Sequence[Region], generator: NegativeGenerator, n: int,
                     records: Sequence[Sequence[Region]] | None = None) -> dict[str, str]:
    """Fill each region's negatives in place; returns {short_expr: error} for backend failures.

    ``records`` groups the regions by record: a generator with ``uses_context`` (difficulty
    ``trivial``) gets the other expressions of the region's record."""
    if records is not None and getattr(generator, "uses_context", False):
        ctx = {id(r): tuple(sorted({o.short_expr for o in group if o.short_expr != r.short_expr}))
               for group in records for r in group}
    else:
        ctx = {}
    keys = sorted({(r.short_expr, ctx.get(id(r), ())) for r in regions})
    exprs = [k[0] for k in keys]
    made = generator.generate(exprs, [k[1] for k in keys]) if ctx else generator.generate(exprs)
    results = dict(zip(keys, made, strict=True))
    prov = generator.provenance()
    errors: dict[str, str] = {}
    for r in regions:
        res = results[(r.short_expr, ctx.get(id(r), ()))]
        if res.error is not None:
            errors[r.short_expr] = res.error
            continue
        full = len(res.negatives) == n
        r.short_expr_negs = list(res.negatives) if full else []
        r.flag_short_neg = int(full and n == FULL_NEGATIVES)
        r.provenance["short_expr_negs"] = {**prov, "levels": list(res.levels) if full else [],
                                           **({"checks": res.checks} if res.checks else {}),
                                           **({"note": res.note} if res.note else {})}
    return errors


STAGES = ("captions", "regions", "negatives")  # what one chunk goes through, in order
Pair = tuple[LoadedImage | None, FineHARDRecord]  # a record and its loaded picture (None: not needed)


class Annotator:
    """Captions -> phrases/boxes -> negatives. ``run`` does all three per chunk (``fgclip annotate``);
    ``fgclip_core.annotate.stages`` runs them one at a time over the previous stage's records.
    ``stages`` limits which backends are built (a detector or captioning model is heavy)."""

    def __init__(self, cfg: AnnotateConfig, images_root: str, out: str, *, captioner: Captioner | None = None,
                 detector: Detector | None = None, negatives: NegativeGenerator | None = None,
                 stages: Collection[str] = STAGES):
        self.cfg, self.root, self.out = cfg, images_root, out
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown annotation stage(s) {sorted(unknown)}; expected some of {list(STAGES)}")
        self.captioner = captioner or (build_captioner(cfg, images_root) if "captions" in stages else None)
        wants_regions = "regions" in stages
        self.detector = detector if detector is not None else (build_detector(cfg) if wants_regions else None)
        self.negatives = negatives or (build_negatives(cfg) if "negatives" in stages else None)
        self.region_metadata = build_region_metadata(cfg) if self.detector is None and wants_regions else None
        self.phrases = RulePhraseExtractor(cfg.phrases)
        self.fingerprint = config_fingerprint(cfg)
        self._images_fs: fsspec.AbstractFileSystem | None = None
        self._root_reader: ImageRoot | None = None

    @property
    def _image_root(self) -> ImageRoot:
        """The one reader every image read goes through; made on first use (in the process that reads:
        an s3fs instance does not survive a fork), and anew by each ``run``."""
        if self._root_reader is None:
            self._root_reader = ImageRoot(self.root, self.cfg.pipeline.max_image_bytes)
        return self._root_reader

    # -- one chunk ---------------------------------------------------------------------------
    def _load(self, refs: Sequence[ImageRef]) -> tuple[list[LoadedImage], list[Quarantined]]:
        quarantine: list[Quarantined] = []
        loaded: list[LoadedImage] = []
        for ref in refs:
            try:
                loaded.append(load_image(ref, WORKING_MAX_SIDE, self.cfg.pipeline.max_image_pixels, self._image_root,
                                         self.cfg.pipeline.min_image_side))
            except (ImageLoadError, OSError) as e:
                quarantine.append(Quarantined(ref.id, ref.f_path, "decode", str(e)))
        return loaded, quarantine

    def _chunk(self, loaded: list[LoadedImage], quarantine: list[Quarantined]
               ) -> tuple[list[FineHARDRecord], list[Quarantined]]:
        captioned = self.caption_images(loaded, quarantine)
        with_regions = self.add_regions(captioned, quarantine)
        return self.add_negatives([rec for _, rec in with_regions], quarantine), quarantine

    # -- the stages, each usable alone ----------------------------------------------------------
    def caption_images(self, loaded: list[LoadedImage], quarantine: list[Quarantined]
                       ) -> list[tuple[LoadedImage, FineHARDRecord]]:
        """Stage 1: a record with its long and short caption per image; failures go to ``quarantine``."""
        assert self.captioner is not None, "built without the captions stage"
        records: list[tuple[LoadedImage, FineHARDRecord]] = []
        for img, cap in zip(loaded, self.captioner.caption(loaded), strict=True):
            rec = FineHARDRecord(id=img.ref.id, f_path=img.ref.f_path, width=img.width, height=img.height)
            if cap.error is not None:
                quarantine.append(Quarantined(rec.id, rec.f_path, "captions", cap.error, rec.to_dict()))
                continue
            rec.caption, rec.short_caption = cap.caption, cap.short_caption
            rec.provenance.update(cap.provenance)
            records.append((img, rec))
        return records

    def add_regions(self, records: Sequence[Pair], quarantine: list[Quarantined]) -> list[Pair]:
        """Stage 2: phrases + boxes (a detector: needs the images) or the regions that come with the images
        (``boxes.backend=metadata``: images not needed, None is fine); ``none``: records pass unchanged."""
        if self.detector is not None:
            missing = [rec.id for img, rec in records if img is None]
            if missing:
                raise ValueError(f"boxes.backend={self.cfg.boxes.backend} looks at the pictures: no image "
                                 f"given for {missing[:5]}")
            loaded = [(img, rec) for img, rec in records if img is not None]
            return [(img, rec) for img, rec in self._boxes(loaded, quarantine)]
        if self.region_metadata is not None:
            return self._given_boxes(list(records), quarantine)
        return list(records)

    def add_negatives(self, records: list[FineHARDRecord], quarantine: list[Quarantined]) -> list[FineHARDRecord]:
        """Stage 3: hard negatives for every region; a record whose negatives failed goes to ``quarantine``."""
        assert self.negatives is not None, "built without the negatives stage"
        regions = [r for rec in records for r in rec.bbox_info]
        if regions and self.cfg.negatives.plausibility == "captions" and hasattr(self.negatives, "learn"):
            self.negatives.learn([rec.caption for rec in records])  # this chunk's captions: resumable
        groups = [rec.bbox_info for rec in records]
        errors = assign_negatives(regions, self.negatives, self.cfg.negatives.n, groups) if regions else {}
        neg_prov = self.negatives.provenance() if regions else {}
        for rec in records:
            if rec.bbox_info:
                rec.provenance["short_expr_negs"] = neg_prov
        kept: list[FineHARDRecord] = []
        for rec in records:
            bad = [e for e in (errors.get(r.short_expr) for r in rec.bbox_info) if e]
            if bad:
                quarantine.append(Quarantined(rec.id, rec.f_path, "negatives", bad[0], rec.to_dict()))
            else:
                kept.append(rec)
        return kept

    def _boxes(self, records: list[tuple[LoadedImage, FineHARDRecord]], quarantine: list[Quarantined]
               ) -> list[tuple[LoadedImage, FineHARDRecord]]:
        assert self.detector is not None
        phrases: list[list[Phrase]] = [self.phrases.extract(rec.caption) for _, rec in records]
        found = self.detector.detect([img.image for img, _ in records], [[p.text for p in ps] for ps in phrases])
        prov, phrase_prov = self.detector.provenance(), self.phrases.provenance()
        out = []
        for (img, rec), ps, dets in zip(records, phrases, found, strict=True):
            if isinstance(dets, str):
                quarantine.append(Quarantined(rec.id, rec.f_path, "boxes", dets, rec.to_dict()))
                continue
            rec.bbox_info = to_regions(select_regions(dets, self.cfg.boxes), ps, prov, phrase_prov)
            rec.provenance["bbox_info"] = {**prov, "phrases": phrase_prov}
            out.append((img, rec))
        return out

    def _given_boxes(self, records: list[Pair], quarantine: list[Quarantined]) -> list[Pair]:
        """boxes.backend=metadata: the regions (phrases, boxes) that come with the images."""
        assert self.region_metadata is not None
        out = []
        for img, rec in records:
            got = self.region_metadata.regions(rec.f_path, rec.caption)
            if isinstance(got, str):
                quarantine.append(Quarantined(rec.id, rec.f_path, "boxes", got, rec.to_dict()))
                continue
            rec.bbox_info, rec.provenance["bbox_info"] = got
            out.append((img, rec))
        return out

    # -- the run ----------------------------------------------------------------------------
    def run(self, progress: bool = True, on_chunk: Callable[[int, Summary], None] | None = None) -> Summary:
        # filesystems are made here, once per run (not in __init__: an s3fs instance does not survive a fork)
        self._root_reader = None   # a fresh image reader per run
        self._out_fs, out_path = filesystem(self.out)
        self._out_base = out_path.rstrip("/")
        refs = list_images(self.root, self.cfg.pipeline.extensions)
        size = self.cfg.pipeline.chunk_size
        chunks = [refs[i: i + size] for i in range(0, len(refs), size)]
        total = Summary(chunks=len(chunks))
        done: dict[int, Summary] = {}
        for ci, chunk in enumerate(chunks):
            marker = _read_json(self._out_fs, f"{self._out_base}/_done/chunk-{ci:05d}.json")
            if marker and marker.get("ids") == [r.id for r in chunk] and marker.get("config") == self.fingerprint:
                done[ci] = Summary(**marker["summary"])
            elif marker:
                log.warning("chunk-%05d: images or config changed since the last run; redoing it", ci)
        todo = [ci for ci in range(len(chunks)) if ci not in done]
        # The next chunk's images are decoded in the background while this one is annotated.
        with tqdm(total=len(refs), unit="img", desc="annotate", disable=not progress) as bar, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="annotate-prefetch") as pool:
            pending = {todo[0]: pool.submit(self._load, chunks[todo[0]])} if todo else {}
            for ci, chunk in enumerate(chunks):
                if ci in done:
                    stats = done[ci]
                    total.chunks_skipped += 1
                else:
                    loaded, quarantine = pending.pop(ci).result()
                    nxt = next((c for c in todo if c > ci), None)
                    if nxt is not None:
                        pending[nxt] = pool.submit(self._load, chunks[nxt])
                    stats = self._finish_chunk(ci, chunk, *self._chunk(loaded, quarantine))
                total.add(stats)
                bar.update(len(chunk))
                if on_chunk is not None:
                    on_chunk(ci, total)
        _write_jsonl(self._out_fs, f"{self._out_base}/summary.json", [asdict(total)])
        return total

    def _finish_chunk(self, ci: int, chunk: Sequence[ImageRef], records: list[FineHARDRecord],
                      quarantine: list[Quarantined]) -> Summary:
        name = f"chunk-{ci:05d}"
        fs, base = self._out_fs, self._out_base
        _write_jsonl(fs, f"{base}/records/{name}.jsonl", [r.to_dict() for r in records])
        _write_jsonl(fs, f"{base}/quarantine/{name}.jsonl", [asdict(q) for q in quarantine])
        stats = Summary(images=len(chunk), records=len(records), quarantined=len(quarantine),
                        regions=sum(len(r.bbox_info) for r in records),
                        regions_with_negatives=sum(g.flag_short_neg for r in records for g in r.bbox_info),
                        records_without_region_metadata=sum(
                            bool(r.provenance.get("bbox_info", {}).get("missing")) for r in records),
                        quarantined_by_stage=dict(Counter(q.stage for q in quarantine)))
        if stats.records + stats.quarantined != stats.images:
            raise RuntimeError(f"{name}: {stats.images} images in but {stats.records} records + "
                               f"{stats.quarantined} quarantined out")
        # the marker is written last: a chunk counts as done only once its records and quarantine exist
        _write_jsonl(fs, f"{base}/_done/{name}.json",
                     [{"ids": [r.id for r in chunk], "config": self.fingerprint, "summary": asdict(stats)}])
        return stats


def read_records(out: str) -> list[FineHARDRecord]:
    """All records of a finished run, in chunk order."""
    fs, path = filesystem(join(out, "records"))
    rows: list[FineHARDRecord] = []
    for p in sorted(fs.glob(path.rstrip("/") + "/chunk-*.jsonl")):
        with fs.open(p, "rt") as f:
            rows.extend(FineHARDRecord.from_dict(json.loads(line)) for line in f if line.strip())
    return rows


def read_quarantine(out: str) -> list[dict[str, Any]]:
    fs, path = filesystem(join(out, "quarantine"))
    rows: list[dict[str, Any]] = []
    for p in sorted(fs.glob(path.rstrip("/") + "/chunk-*.jsonl")):
        with fs.open(p, "rt") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows
