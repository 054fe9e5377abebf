"""Record and image checks: every input record ends either kept or quarantined with a reason.

``Validator.check(item)`` normalises a ``RawItem`` (``io.record_from_raw``), checks what the
record means (boxes, texts, negatives, that it can be written), reads its image through
``paths.ImageRoot`` (inside the root, a regular file, bounded size) and decodes it
(``images.decode_image``). It returns ``Kept`` (the record, with its image size filled in, plus the
bytes to store) or a ``QuarantineEntry`` (id, source file and line, reason, detail, raw record).
Only a kept record claims its id (``Validator.claim``): a quarantined one never makes a later valid
namesake a ``duplicate_id``. It does not raise on bad input; ``ValidationSummary`` keeps
``total == kept + quarantined``.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fgclip_core.data.config import ReadConfig, ValidationConfig
from fgclip_core.data.errors import Reason, RecordError
from fgclip_core.data.images import decode_image, encode_jpeg
from fgclip_core.data.io import RawItem, record_from_raw
from fgclip_core.data.paths import ImageRoot
from fgclip_core.data.records import FineHARDRecord, Region

log = logging.getLogger(__name__)


@dataclass
class QuarantineEntry:
    id: str | None
    source: str
    index: int
    line: int | None
    reason: str
    detail: str
    raw: Any

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "index": self.index, "line": self.line,
                "reason": self.reason, "detail": self.detail, "raw": self.raw}


@dataclass
class Kept:
    record: FineHARDRecord
    image_bytes: bytes | None = None   # JPEG bytes for the shard (None when not asked for)
    item: RawItem | None = None        # where the record came from (a later duplicate_id names it)


@dataclass
class ValidationSummary:
    total: int = 0
    kept: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)

    @property
    def quarantined(self) -> int:
        return sum(self.by_reason.values())

    def add(self, outcome: Kept | QuarantineEntry) -> None:
        self.total += 1
        if isinstance(outcome, Kept):
            self.kept += 1
        else:
            self.by_reason[outcome.reason] += 1
        assert self.total == self.kept + self.quarantined

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "kept": self.kept, "quarantined": self.quarantined,
                "quarantined_by_reason": dict(sorted(self.by_reason.items()))}


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _check_bbox(region: Region, where: str, tol: float) -> None:
    box = region.bbox
    if any(not math.isfinite(v) for v in box):
        raise RecordError(Reason.BBOX_NAN, f"{where}.bbox {box} is not finite")
    if any(v < -tol or v > 1 + tol for v in box):
        raise RecordError(Reason.BBOX_OUT_OF_RANGE, f"{where}.bbox {box} is outside [0, 1]")
    region.bbox = [min(1.0, max(0.0, v)) for v in box]
    x1, y1, x2, y2 = region.bbox
    if x1 >= x2 or y1 >= y2:
        raise RecordError(Reason.BBOX_DEGENERATE, f"{where}.bbox {box} needs x1 < x2 and y1 < y2")


def _check_negatives(region: Region, where: str, n: int) -> None:
    negs = region.short_expr_negs
    if len(negs) != n:
        raise RecordError(Reason.NEGATIVES_WRONG_COUNT,
                          f"{where}.short_expr_negs has {len(negs)} negatives, flag_short_neg=1 needs {n}")
    for j, neg in enumerate(negs):
        if not neg.strip():
            raise RecordError(Reason.CAPTION_EMPTY, f"{where}.short_expr_negs[{j}] is empty")
    positive = _norm(region.short_expr)
    for j, neg in enumerate(negs):
        if _norm(neg) == positive:
            raise RecordError(Reason.NEGATIVE_EQUALS_POSITIVE, f"{where}.short_expr_negs[{j}] equals short_expr {neg!r}")
    seen: dict[str, int] = {}
    for j, neg in enumerate(negs):
        k = _norm(neg)
        if k in seen:
            raise RecordError(Reason.NEGATIVES_DUPLICATED,
                              f"{where}.short_expr_negs[{j}] repeats short_expr_negs[{seen[k]}] {neg!r}")
        seen[k] = j


def check_record(record: FineHARDRecord, cfg: ValidationConfig) -> None:
    """Checks on the meaning of a normalised record (no image access). Raises ``RecordError``."""
    for name in ("caption", "short_caption"):
        if not getattr(record, name).strip():
            raise RecordError(Reason.CAPTION_EMPTY, f"{name} is empty")
    for i, region in enumerate(record.bbox_info):
        where = f"bbox_info[{i}]"
        _check_bbox(region, where, cfg.bbox_tolerance)
        if not region.short_expr.strip():
            raise RecordError(Reason.CAPTION_EMPTY, f"{where}.short_expr is empty")
        if region.flag_short_neg == 1:
            _check_negatives(region, where, cfg.num_negatives)


class Validator:
    """Checker of one run (it remembers ids for ``duplicate_id``); create one per run.

    ``check`` does everything in this process. ``check_fields`` (parse, ids, meaning: needs the
    run's state) and ``check_image`` (read + decode: stateless, the costly part) are the two halves,
    so that ``iter_outcomes`` can run the images in a process pool, in input order.
    """

    def __init__(self, images_root: str | None, read: ReadConfig | None = None,
                 validation: ValidationConfig | None = None, *, want_image_bytes: bool = False,
                 jpeg_quality: int = 95) -> None:
        self.images_root = images_root
        self.read = read or ReadConfig()
        self.cfg = validation or ValidationConfig()
        self.want_image_bytes = want_image_bytes
        self.jpeg_quality = jpeg_quality
        self.root = ImageRoot(images_root, self.cfg.max_image_bytes)   # the one way an image is read
        self._seen: set[str] = set()   # ids of kept records only

    def image_url(self, f_path: str) -> str:
        return self.root.url(f_path)

    def _quarantine(self, item: RawItem, rid: str | None, e: Exception) -> QuarantineEntry:
        if rid is None and isinstance(item.raw, dict) and isinstance(item.raw.get("id"), str):
            rid = item.raw["id"][:200]   # the id as given, so that the entry can be found by it
        if isinstance(e, RecordError):
            return QuarantineEntry(rid, item.source, item.index, item.line, e.reason.value, e.detail, item.raw)
        # a bug must not stop a long run: quarantine, and say it is unexpected
        log.error("unexpected error validating %s: %s: %s", item.where, type(e).__name__, e)
        return QuarantineEntry(rid, item.source, item.index, item.line, Reason.RECORD_MALFORMED.value,
                               f"unexpected error: {type(e).__name__}: {e}", item.raw)

    def check_fields(self, item: RawItem) -> FineHARDRecord | QuarantineEntry:
        rid: str | None = None
        try:
            if item.parse_error is not None:
                raise RecordError(Reason.RECORD_MALFORMED, item.parse_error)
            record = record_from_raw(item.raw, self.read)
            rid = record.id
            if rid in self._seen:   # early exit; ``claim`` decides, when the outcome is final
                raise RecordError(Reason.DUPLICATE_ID, f"id {rid!r} already kept earlier in the input")
            check_record(record, self.cfg)
            _check_writable(record)
            return record
        except Exception as e:
            return self._quarantine(item, rid, e)

    def check_image(self, item: RawItem, record: FineHARDRecord) -> Kept | QuarantineEntry:
        if not self.cfg.check_images:
            return Kept(record, item=item)
        try:
            data = self.root.read(record.f_path)
            decoded = decode_image(data, max_pixels=self.cfg.max_pixels, min_side=self.cfg.min_side)
            record.width, record.height = decoded.image.size
            image_bytes = None
            if self.want_image_bytes:
                image_bytes = encode_jpeg(decoded.image, self.jpeg_quality) if decoded.reencode else data
            return Kept(record, image_bytes, item)
        except Exception as e:
            return self._quarantine(item, record.id, e)

    def claim(self, outcome: Kept | QuarantineEntry) -> Kept | QuarantineEntry:
        """Only a kept record claims its id: a later record with a kept id is ``duplicate_id``; one
        whose earlier namesake was quarantined is judged on its own. Call once per final outcome,
        in input order."""
        if not isinstance(outcome, Kept):
            return outcome
        rid = outcome.record.id
        if rid in self._seen:
            item = outcome.item or RawItem(raw=outcome.record.to_dict(), source="", index=-1)
            return QuarantineEntry(rid, item.source, item.index, item.line, Reason.DUPLICATE_ID.value,
                                   f"id {rid!r} already kept earlier in the input", item.raw)
        self._seen.add(rid)
        return outcome

    def check(self, item: RawItem) -> Kept | QuarantineEntry:
        fields = self.check_fields(item)
        return self.claim(fields if isinstance(fields, QuarantineEntry) else self.check_image(item, fields))


def _check_writable(record: FineHARDRecord) -> None:
    """The record must survive being written (kept.jsonl, shards): no lone surrogate in any text, no
    NaN/Infinity, no free-form ``provenance`` that cannot be encoded. Checked field by field (an
    ``asdict`` + ``dumps`` of the whole record would cost more than all the other checks together)."""
    texts = [record.id, record.f_path, record.caption, record.short_caption]
    for r in record.bbox_info:
        texts += (r.short_expr, r.long_expr, *r.short_expr_negs)
        if r.score is not None and not math.isfinite(r.score):
            raise RecordError(Reason.RECORD_MALFORMED, f"a region score is {r.score}, which JSON cannot carry")
    try:
        "\n".join(texts).encode("utf-8")
        json.dumps([record.provenance, [r.provenance for r in record.bbox_info]],
                   ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise RecordError(Reason.RECORD_MALFORMED, f"holds text that is not writable as UTF-8 "
                                                   f"(a lone surrogate such as \\ud800): {e.reason}") from e
    except RecursionError as e:
        raise RecordError(Reason.RECORD_MALFORMED, "provenance is nested too deep to be written") from e
    except (ValueError, TypeError) as e:   # allow_nan=False; a value JSON has no form for
        raise RecordError(Reason.RECORD_MALFORMED, f"provenance holds NaN or Infinity, which JSON cannot carry: {e}") from e


_POOL_VALIDATOR: Validator | None = None


def _pool_init(validator: Validator) -> None:
    global _POOL_VALIDATOR
    _POOL_VALIDATOR = validator


def _pool_image(job: tuple[RawItem, FineHARDRecord | QuarantineEntry]) -> Kept | QuarantineEntry:
    item, fields = job
    if isinstance(fields, QuarantineEntry):
        return fields
    assert _POOL_VALIDATOR is not None
    return _POOL_VALIDATOR.check_image(item, fields)


def iter_outcomes(items: Iterable[RawItem], validator: Validator, workers: int = 1) -> Iterator[Kept | QuarantineEntry]:
    """Outcomes in input order; with ``workers > 1`` images are read and decoded in a process pool
    (record checks and duplicate ids stay in this process)."""
    if workers <= 1:
        for item in items:
            yield validator.check(item)
        return
    jobs = ((item, validator.check_fields(item)) for item in items)
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_pool_init, initargs=(validator,)) as pool:
        for outcome in pool.imap(_pool_image, jobs, chunksize=4):
            yield validator.claim(outcome)
