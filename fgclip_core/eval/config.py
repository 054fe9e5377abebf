"""Typed evaluation settings and benchmark specs (the single source of their defaults).

The ``fgclip eval all`` YAML is a :class:`SuiteFile`::

    settings:            # optional, every field has a default
      batch_size: 32
    benchmarks:
      - {name: fgovd-hard, suite: fgovd, data: fgovd/hard.jsonl, images: coco}
      - {name: sharegpt4v-1k, suite: long-retrieval, format: sharegpt4v, data: share4v.json, images: sg4v}
      - {name: fgovd-hard-strict, suite: fgovd, data: fgovd/hard.jsonl, images: coco, ties: pessimistic}
      - {name: coco-5k, suite: short-retrieval, data: coco/annotations/captions_val2017.json, images: coco/val2017}

Relative ``data`` / ``images`` / ``classnames`` paths are resolved against the YAML file's folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from fgclip_core.config import ConfigError, StrictModel, load_config
from fgclip_core.eval.protocol import DEFAULT_PROTOCOL, Protocol, ProtocolSettings
from fgclip_core.eval.ties import DEFAULT_TIE_TOL

Suite = Literal["fgovd", "long-retrieval", "short-retrieval", "zeroshot", "box-cls"]
SUITES: tuple[str, ...] = ("fgovd", "long-retrieval", "short-retrieval", "zeroshot", "box-cls")
Format = Literal["auto", "fgovd", "sharegpt4v", "dci", "urban1k", "coco", "karpathy", "caption-list",
                 "image-folder", "label-file", "coco-instances"]
# FG-OVD file names (as distributed with FG-CLIP's evaluation) -> difficulty: negatives differ from the
# positive in 1 (hard), 2 (medium) or 3 (easy) attributes, or are shuffled captions (trivial).
FGOVD_FILES: tuple[tuple[str, str], ...] = (("1_attributes", "hard"), ("2_attributes", "medium"),
                                            ("3_attributes", "easy"), ("shuffle_negatives", "trivial"))
TemplateSet = Literal["clip80", "simple", "none"]


class EvalSettings(StrictModel):
    batch_size: int = Field(default=32, ge=1, description="images / texts per forward pass")
    chunk_size: int = Field(default=1024, ge=1, description="query rows per similarity block in the metrics")
    tie_tol: float = Field(default=DEFAULT_TIE_TOL, ge=0.0, description="scores within this (absolute) "
                           "of the positive's tie with it (fgclip_core/eval/metrics.py)")
    recall_ks: tuple[int, ...] = (1, 5, 10)
    topk: tuple[int, ...] = (1, 5)
    device: str = "cpu"
    cache_dir: str | None = Field(default=None, description="embedding cache; default <output>/cache")
    templates: TemplateSet = Field(default="clip80", description="prompts for zero-shot class names")
    box_templates: TemplateSet = Field(default="clip80", description="prompts for box-classification class names")
    gallery_queries: int = Field(default=3, ge=0, description="sample queries shown in the report")
    gallery_top: int = Field(default=5, ge=1)
    curve_max_k: int = Field(default=50, ge=1, description="recall@k curves go up to this k")
    progress: bool = True
    paper_numbers: str | None = Field(default=None, description="published figures to compare with "
                                      "(default: the packaged templates/paper_numbers.yaml)")
    paper_release: str | None = Field(default=None, description="compare with this release's published "
                                      "figures even when the model's fingerprint is not listed for it")

    @field_validator("recall_ks", "topk")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(k < 1 for k in v):
            raise ValueError("k values must be >= 1")
        return v


class BenchmarkSpec(ProtocolSettings):
    """One benchmark entry; the protocol settings it inherits override its ``protocol`` preset."""

    suite: Suite
    data: str
    images: str | None = Field(default=None, description="images root; Urban-1K defaults to DATA/image")
    name: str | None = None
    format: Format = "auto"
    classnames: str | None = Field(default=None, description="class-names file (zeroshot)")
    protocol: Protocol = Field(default=DEFAULT_PROTOCOL, description="evaluation preset (fgclip_core/eval/README.md)")
    limit: int | None = Field(default=None, ge=1, description="evaluate only the first N items / images")
    split: str = Field(default="test", description="Karpathy split")
    skip_crowd: bool = False

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str | None) -> str | None:
        # The name becomes a folder under the output and part of MLflow metric names.
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError(f"benchmark name {v!r}: use letters, digits, '_', '.', '-'")
        return v

    def protocol_values(self) -> dict:
        """The preset's settings with this entry's overrides."""
        return self.resolved(self.protocol)

    def display_name(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(self.data.rstrip("/")).stem)
        if self.suite == "fgovd":  # each official difficulty file is its own benchmark
            stem = next((d for prefix, d in FGOVD_FILES if stem.startswith(prefix)), stem)
        return self.name or f"{self.suite}-{stem}"


class SuiteFile(StrictModel):
    settings: EvalSettings = EvalSettings()
    benchmarks: list[BenchmarkSpec]

    @field_validator("benchmarks")
    @classmethod
    def _unique_names(cls, v: list[BenchmarkSpec]) -> list[BenchmarkSpec]:
        if not v:
            raise ValueError("no benchmarks listed")
        names = [b.display_name() for b in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"benchmark names must be unique, repeated: {dupes}")
        return v


def _resolve(base: Path, p: str | None) -> str | None:
    if p is None or "://" in p or Path(p).is_absolute():
        return p
    return str(base / p)


def load_suite_file(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SuiteFile:
    """Read the ``all`` YAML; relative paths are taken from the YAML file's folder."""
    p = Path(path)
    sf = load_config(SuiteFile, p, overrides)
    base = p.parent.resolve()
    try:
        return sf.model_copy(update={"benchmarks": [
            b.model_copy(update={"data": _resolve(base, b.data), "images": _resolve(base, b.images),
                                 "classnames": _resolve(base, b.classnames)})
            for b in sf.benchmarks]})
    except ValueError as e:  # pragma: no cover - model_copy does not validate
        raise ConfigError(f"{p}: {e}") from e
