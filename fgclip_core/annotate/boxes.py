"""Stage 2b: region boxes for caption phrases, then the region records.

A :class:`Detector` takes images and, per image, the phrases to look for, and returns scored
boxes in normalised xyxy. :func:`select_regions` then applies the confidence threshold, NMS
(class-agnostic by default, as FG-CLIP did after YOLO-World) and the region limit, and clips
boxes to the image, dropping degenerate ones. Backends: ``HFZeroShotDetector``
(``backends/hf_local.py``: OWLv2 / OWL-ViT / Grounding DINO through transformers) and
:class:`EndpointDetector` (a grounding-capable VLM behind an OpenAI-compatible endpoint).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from fgclip_core.annotate.backends.openai_compat import (
    ChatJob,
    JobResult,
    OpenAICompatClient,
    image_data_url,
    user_message,
)
from fgclip_core.annotate.config import BoxConfig, EndpointConfig
from fgclip_core.annotate.phrases import Phrase
from fgclip_core.data.records import Region


@dataclass(frozen=True)
class Detection:
    label: int  # index into the phrases queried for this image
    score: float
    box: tuple[float, float, float, float]  # normalised xyxy (may fall outside [0, 1] before clipping)


class Detector(Protocol):
    def provenance(self) -> dict[str, Any]: ...

    def detect(self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]]) -> list[list[Detection] | str]:
        """Per image: its detections, or an error string (the image is then quarantined)."""
        ...


def clip_box(box: Sequence[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (min(1.0, max(0.0, float(v))) for v in box)
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(dets: Sequence[Detection], iou_threshold: float, class_agnostic: bool = True) -> list[Detection]:
    """Greedy NMS by descending score; ties keep the earlier detection."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i].score)
    kept: list[Detection] = []
    for i in order:
        d = dets[i]
        if all((not class_agnostic and k.label != d.label) or iou(k.box, d.box) <= iou_threshold for k in kept):
            kept.append(d)
    return kept


def select_regions(dets: Sequence[Detection], cfg: BoxConfig) -> list[Detection]:
    boxed = [Detection(d.label, d.score, clip_box(d.box)) for d in dets if d.score >= cfg.score_threshold]
    boxed = [d for d in boxed if d.box[2] - d.box[0] >= cfg.min_side and d.box[3] - d.box[1] >= cfg.min_side]
    return nms(boxed, cfg.nms_iou, cfg.class_agnostic_nms)[: cfg.max_regions]


def to_regions(dets: Sequence[Detection], phrases: Sequence[Phrase], prov: dict[str, Any],
               phrase_prov: dict[str, Any]) -> list[Region]:
    out = []
    for d in dets:
        p = phrases[d.label]
        out.append(Region(bbox=[round(v, 6) for v in d.box], short_expr=p.text, long_expr=p.sentence,
                          score=round(float(d.score), 6),
                          provenance={"bbox": prov, "short_expr": phrase_prov,
                                      "long_expr": {**phrase_prov, "derived": "caption_sentence"}}))
    return out


_JSON_BLOCK = re.compile(r"\[.*\]", re.S)


def parse_grounding(text: str, phrases: Sequence[str], coord_scale: float) -> list[Detection]:
    """Parse ``[{"phrase", "bbox", "score"}]`` (optionally inside a code fence); ValueError when unusable."""
    m = _JSON_BLOCK.search(text)
    if m is None:
        raise ValueError("no JSON list in the answer")
    try:
        items = json.loads(m.group(0))
    except json.JSONDecodeError as e:
        raise ValueError(f"answer is not valid JSON: {e}") from e
    index = {p.lower(): i for i, p in enumerate(phrases)}
    out: list[Detection] = []
    for it in items:
        if not isinstance(it, dict) or not isinstance(it.get("phrase"), str):
            raise ValueError(f"bad item {it!r}")
        label = index.get(it["phrase"].strip().lower())
        bbox = it.get("bbox")
        if label is None:
            continue  # a phrase that was not asked for: ignored
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise ValueError(f"bad bbox for {it['phrase']!r}: {bbox!r}")
        score = it.get("score", 1.0)
        if not isinstance(score, int | float):
            raise ValueError(f"bad score for {it['phrase']!r}: {score!r}")
        out.append(Detection(label, float(score), tuple(float(v) / coord_scale for v in bbox)))  # type: ignore[arg-type]
    return out


class EndpointDetector:
    def __init__(self, cfg: BoxConfig, endpoint: EndpointConfig, client: OpenAICompatClient | None = None,
                 on_done: Callable[[JobResult[list[Detection]]], None] | None = None):
        self.cfg = cfg
        self.client = client or OpenAICompatClient(endpoint)
        self.on_done = on_done

    def provenance(self) -> dict[str, Any]:
        return self.client.provenance(self.cfg.prompt_version)

    def detect(self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]]) -> list[list[Detection] | str]:
        def job(img: Image.Image, phrases: Sequence[str]) -> ChatJob[list[Detection]]:
            prompt = self.cfg.prompt_template.format(phrases="; ".join(phrases), coord_scale=self.cfg.coord_scale)
            return ChatJob(lambda: user_message(prompt, [image_data_url(img, self.cfg.max_image_side)]),
                           lambda text: parse_grounding(text, phrases, self.cfg.coord_scale))

        out: list[list[Detection] | str] = [[] for _ in images]
        todo = [i for i, q in enumerate(queries) if q]
        results = self.client.run([job(images[i], queries[i]) for i in todo], self.on_done)
        for i, res in zip(todo, results, strict=True):
            out[i] = res.value if res.error is None and res.value is not None else f"boxes/openai: {res.error}"
        return out
