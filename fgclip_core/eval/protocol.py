"""Evaluation protocol presets: ``official`` (the FG-CLIP evaluation scripts) and ``clip_benchmark``
(LAION's CLIP_benchmark), each a set of named settings (the table in this package's README).

A benchmark entry (``BenchmarkSpec``, which has these settings as fields) picks a preset with
``protocol:`` (default ``official``) and may override any setting by naming it (``ties: pessimistic``). The resolved preset and settings (only those that act on the
entry's suite) are written into ``metrics.json`` as ``"protocol": {"name", "settings"}`` and as MLflow
tags; :func:`protocols_match` says whether two results may be compared (baselines, champion gates).
No setting adds a pass over the data: each one changes what a reader keeps or how a rank is counted.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, field_validator

from fgclip_core.config import StrictModel
from fgclip_core.eval.ties import TieRule

Protocol = Literal["official", "clip_benchmark"]
PROTOCOLS: tuple[str, ...] = ("official", "clip_benchmark")
DEFAULT_PROTOCOL: Protocol = "official"


class ProtocolSettings(StrictModel):
    """Every way the two presets differ (or could be asked to). ``None`` = take the preset's value."""

    ties: TieRule | None = Field(default=None, description="FG-OVD: a tie for first counts as correct "
                                 "(optimistic, official script) or as wrong (pessimistic)")
    captions_per_image: int | Literal["all"] | None = Field(default=None, description="COCO / Flickr30k: "
                                                             "captions kept per image, in file order")
    sharegpt4v_items: int | None = Field(default=None, ge=1, description="ShareGPT4V: first N items")
    sharegpt4v_images: Literal["basename", "path"] | None = Field(
        default=None, description="ShareGPT4V: find 'image' by its file name in the images root, or by its path")
    urban1k_caption: Literal["first_line", "whole_file"] | None = Field(
        default=None, description="Urban-1K: the caption file's first line, or the whole file")
    default_classnames: Literal["builtin", "folders"] | None = Field(
        default=None, description="zero-shot without a class-names file: the built-in ImageNet-1k names "
                                  "(WordNet-id folders), or the folder names")
    drop_last: bool | None = Field(default=None, description="zero-shot: drop the last partial batch "
                                   "(batch_size) as the official DataLoader does")

    @field_validator("captions_per_image")
    @classmethod
    def _captions(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v < 1:
            raise ValueError("captions_per_image must be >= 1 or 'all'")
        return v

    def resolved(self, protocol: Protocol) -> dict[str, Any]:
        """Every setting with a value: the preset's, overridden by the ones set here."""
        values = dict(PRESETS[protocol])
        own = self.model_dump(include=set(SETTING_NAMES))  # a BenchmarkSpec has more fields
        values.update({k: v for k, v in own.items() if v is not None})
        return values


SETTING_NAMES: tuple[str, ...] = tuple(ProtocolSettings.model_fields)

PRESETS: dict[str, dict[str, Any]] = {
    "official": {"ties": "optimistic", "captions_per_image": 5, "sharegpt4v_items": 1000,
                 "sharegpt4v_images": "basename", "urban1k_caption": "first_line", "default_classnames": "builtin",
                 "drop_last": False},
    "clip_benchmark": {"ties": "pessimistic", "captions_per_image": "all", "sharegpt4v_items": 1000,
                       "sharegpt4v_images": "basename", "urban1k_caption": "whole_file", "default_classnames": "builtin",
                       "drop_last": False},
}

# Which settings act on which suite (recorded, and compared, per benchmark). Evaluation settings that
# change a metric (tie_tol, templates, ks) are recorded with them.
SUITE_SETTINGS: dict[str, tuple[str, ...]] = {
    "fgovd": ("ties", "tie_tol"),
    "long-retrieval": ("sharegpt4v_items", "sharegpt4v_images", "urban1k_caption", "tie_tol", "recall_ks"),
    "short-retrieval": ("captions_per_image", "tie_tol", "recall_ks"),
    "zeroshot": ("default_classnames", "drop_last", "templates", "tie_tol", "topk"),
    "box-cls": ("box_templates", "tie_tol", "topk"),
}


def protocol_record(protocol: str, settings: dict[str, Any], suite: str) -> dict[str, Any]:
    """``{"name": protocol, "settings": {...}}`` with the settings that act on ``suite`` (JSON-ready)."""
    keep = SUITE_SETTINGS[suite]
    return {"name": protocol, "settings": {k: (list(v) if isinstance(v, tuple) else v)
                                           for k, v in settings.items() if k in keep}}


def _records(meta: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """Per-benchmark protocol records of a ``metrics.json`` (one benchmark, or the ``all`` summary)."""
    if not isinstance(meta, dict):
        return None
    if isinstance(meta.get("protocols"), dict):
        return meta["protocols"]
    if isinstance(meta.get("protocol"), dict):
        return {str(meta.get("benchmark", "")): meta["protocol"]}
    return None


def protocols_match(a_meta: dict[str, Any], b_meta: dict[str, Any], benchmark: str | None = None) -> bool:
    """Whether two evaluation results were measured under the same protocol, so their numbers may be
    compared. ``a_meta`` / ``b_meta`` are ``metrics.json`` contents (one benchmark or the ``all``
    summary). With ``benchmark``, only that benchmark's protocol is compared; otherwise every
    benchmark both results hold (at least one). A result without a protocol record (written before
    presets existed) matches nothing."""
    ra, rb = _records(a_meta), _records(b_meta)
    if ra is None or rb is None:
        return False
    if benchmark is not None:
        return benchmark in ra and benchmark in rb and ra[benchmark] == rb[benchmark]
    if len(ra) == 1 and len(rb) == 1:  # single-benchmark files: compare whatever each was named
        return next(iter(ra.values())) == next(iter(rb.values()))
    common = set(ra) & set(rb)
    return bool(common) and all(ra[k] == rb[k] for k in common)


def protocol_tags(meta: dict[str, Any], prefix: str = "eval") -> dict[str, str]:
    """MLflow tags for a ``metrics.json``: ``eval.protocol`` (the JSON records, what
    :func:`protocols_match` reads back via :func:`meta_from_tags`) and one readable tag per benchmark
    and setting, ``eval.<benchmark>.protocol`` / ``eval.<benchmark>.protocol.<setting>``."""
    records = _records(meta) or {}
    if not records:
        return {}
    tags = {f"{prefix}.protocol": json.dumps({"protocols": records}, sort_keys=True)}
    for bench, rec in records.items():
        tags[f"{prefix}.{bench}.protocol"] = str(rec.get("name"))
        for k, v in rec.get("settings", {}).items():
            tags[f"{prefix}.{bench}.protocol.{k}"] = json.dumps(v)
    return tags


def merged_records(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``{"protocols": {...}}`` from several ``metrics.json`` contents (``fgclip registry register
    --metrics A --metrics B``); a benchmark recorded twice keeps the last record."""
    out: dict[str, Any] = {}
    for m in metas:
        out.update(_records(m) or {})
    return {"protocols": out}


def meta_from_tags(tags: dict[str, str], prefix: str = "eval") -> dict[str, Any] | None:
    """The inverse of :func:`protocol_tags` for :func:`protocols_match` (``None`` without the tag)."""
    raw = tags.get(f"{prefix}.protocol")
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def gate_comparable(a_tags: dict[str, str], b_tags: dict[str, str], metric: str) -> bool:
    """For a champion gate on ``metric`` (``BENCHMARK/KEY``): may two registered versions' values be
    compared, judging by their :func:`protocol_tags`? Neither recorded (both registered before
    presets): yes, as before. One recorded, or different records: no. The gate metric's benchmark
    is compared when both record it, otherwise every benchmark both hold."""
    a, b = meta_from_tags(a_tags), meta_from_tags(b_tags)
    if a is None and b is None:
        return True
    if a is None or b is None:
        return False
    bench = metric.split("/", 1)[0]
    ra, rb = _records(a) or {}, _records(b) or {}
    return protocols_match(a, b, benchmark=bench if bench in ra and bench in rb else None)
