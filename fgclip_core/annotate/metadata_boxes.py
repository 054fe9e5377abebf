"""Stage 2b without a detector: region boxes that come with the images (``boxes.backend: metadata``).

The boxes were made earlier (a detector run elsewhere, human annotators) and sit in a metadata
JSONL, one line per image keyed as the caption sidecar keys images (``file_name`` or ``f_path``,
relative to the images root)::

    {"file_name": "a/b.jpg", "caption": "...", "regions": [
        {"bbox": [x1, y1, x2, y2], "phrase": "a red car", "description": "A red car is parked.", "score": 0.9}]}

``bbox`` is normalised xyxy; ``description`` and ``score`` are optional (``short_expr`` /
``long_expr`` are accepted for ``phrase`` / ``description``, so an earlier run's ``bbox_info`` can
be fed back). The given phrase is the region's ``short_expr`` (no phrase extraction), its
``long_expr`` the description, else the caption sentence that carries the phrase. There is no
score threshold, NMS or region limit (the labels are taken as given); boxes are clipped and those
under ``boxes.min_side`` dropped as degenerate, as for detectors.

A line whose regions are malformed makes its image's result an error string naming the file and
line (the pipeline quarantines the image at stage ``boxes``); a second line for the same image does
too. A line that is not a JSON object with a key cannot be tied to an image: reading the file
raises ``ValueError`` naming the file and line (as the sidecar captioner does), before any work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fgclip_core.annotate.boxes import clip_box
from fgclip_core.annotate.captions import split_sentences
from fgclip_core.annotate.config import AnnotateConfig, BoxConfig
from fgclip_core.annotate.metadata_file import iter_metadata_rows
from fgclip_core.data.records import Region

BACKEND = "metadata"


@dataclass(frozen=True)
class GivenRegion:
    bbox: tuple[float, float, float, float]
    phrase: str
    description: str | None
    score: float | None


@dataclass(frozen=True)
class Entry:
    file: str  # the JSONL file the line came from
    line: int
    regions: tuple[GivenRegion, ...] = ()
    error: str | None = None  # why the line's regions cannot be used (the image is quarantined)


def metadata_url(cfg: AnnotateConfig) -> str | None:
    """``boxes.metadata_file``, else the captions' ``metadata_file``."""
    return cfg.boxes.metadata_file or cfg.captions.metadata_file


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def parse_regions(value: Any) -> tuple[GivenRegion, ...]:
    """The ``regions`` of one line; ValueError says what is wrong (first problem only)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"'regions' must be a list, got {type(value).__name__}")
    out = []
    for i, r in enumerate(value):
        if not isinstance(r, dict):
            raise ValueError(f"regions[{i}] must be an object, got {r!r}")
        bbox = r.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) and 0 <= v <= 1 for v in bbox)
                and bbox[0] < bbox[2] and bbox[1] < bbox[3]):
            raise ValueError(f"regions[{i}].bbox must be 4 numbers in [0, 1] with x1 < x2 and y1 < y2 "
                             f"(normalised xyxy), got {bbox!r}")
        phrase = r.get("phrase", r.get("short_expr"))
        if not isinstance(phrase, str) or not phrase.strip():
            raise ValueError(f"regions[{i}].phrase must be a non-empty string, got {phrase!r}")
        desc = r.get("description", r.get("long_expr"))
        if desc is not None and not isinstance(desc, str):
            raise ValueError(f"regions[{i}].description must be a string, got {desc!r}")
        score = r.get("score")
        if score is not None and not _number(score):
            raise ValueError(f"regions[{i}].score must be a number, got {score!r}")
        desc = " ".join(desc.split()) if desc is not None else ""
        out.append(GivenRegion(tuple(float(v) for v in bbox), " ".join(phrase.split()),  # type: ignore[arg-type]
                               desc or None, None if score is None else float(score)))
    return tuple(out)


def read_entries(url: str) -> dict[str, Entry]:
    """One JSONL file, or every ``*.jsonl`` in a folder; keyed by ``file_name`` / ``f_path``."""
    out: dict[str, Entry] = {}
    for m in iter_metadata_rows(url):
        path, n, key = m.file, m.line, m.key
        if key in out:
            first = out[key]
            out[key] = Entry(path, n, error=f"{path}:{n}: a second line for {key} "
                                            f"(the first is {first.file}:{first.line})")
            continue
        try:
            out[key] = Entry(path, n, parse_regions(m.row.get("regions", m.row.get("bbox_info"))))
        except ValueError as e:
            out[key] = Entry(path, n, error=f"{path}:{n}: {key}: {e}")
    return out


def carrying_sentence(caption: str, phrase: str) -> str | None:
    """The first caption sentence that contains the phrase (case and spacing ignored)."""
    want = " ".join(phrase.lower().split())
    return next((s for s in split_sentences(caption) if want in " ".join(s.lower().split())), None)


class MetadataRegions:
    """Regions for an image from the metadata JSONL (read once, when built)."""

    def __init__(self, cfg: BoxConfig, url: str):
        self.cfg, self.url = cfg, url
        self.entries = read_entries(url)

    def provenance(self) -> dict[str, Any]:
        return {"backend": BACKEND, "model": self.url, "prompt_version": "none"}

    def regions(self, f_path: str, caption: str) -> tuple[list[Region], dict[str, Any]] | str:
        """The image's regions and its record-level ``bbox_info`` provenance, or an error string.

        An image without a line gets no regions (provenance ``missing: true``).
        """
        entry = self.entries.get(f_path)
        if entry is None:
            return [], {**self.provenance(), "missing": True}
        if entry.error is not None:
            return f"boxes/{BACKEND}: {entry.error}"
        prov = {"backend": BACKEND, "model": entry.file, "prompt_version": "none", "line": entry.line}
        out = []
        for g in entry.regions:
            box = [round(v, 6) for v in clip_box(g.bbox)]
            if box[2] - box[0] < max(self.cfg.min_side, 1e-6) or box[3] - box[1] < max(self.cfg.min_side, 1e-6):
                continue  # degenerate, as for detector boxes
            if g.description:
                long_expr, long_prov = g.description, {**prov, "derived": "description"}
            else:
                sentence = carrying_sentence(caption, g.phrase)
                long_expr = sentence or ""
                long_prov = {**prov, "derived": "caption_sentence" if sentence else "none"}
            out.append(Region(bbox=box, short_expr=g.phrase, long_expr=long_expr,
                              score=None if g.score is None else round(g.score, 6),
                              provenance={"bbox": prov, "short_expr": {**prov, "derived": "phrase"},
                                          "long_expr": long_prov}))
        return out, prov
