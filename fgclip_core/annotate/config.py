"""Typed annotation config: one source of defaults for every stage.

The defaults run fully offline: captions come with the images (sidecar/metadata), phrases come
from the rule-based chunker, and hard negatives from the rule-based generator. Region boxes need a
detector, so the default box backend is ``none`` (records without regions) until a local
detector directory (``boxes.backend: hf_local``, ``boxes.model_dir``), an endpoint, or boxes that
come with the images (``boxes.backend: metadata``, a metadata JSONL with ``regions``) are set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fgclip_core.config import StrictModel, load_config
from fgclip_core.data.config import MAX_IMAGE_BYTES

CAPTION_PROMPT = (
    "Describe this image in detail in one paragraph of 3 to 6 sentences. Name the main objects and "
    "give their colours, materials, sizes, counts, patterns, textures, shapes and states, and where "
    "they are relative to each other. Do not speculate about what is not visible."
)
GROUNDING_PROMPT = (
    "Find these phrases in the image: {phrases}. Answer with JSON only: a list of objects "
    '{{"phrase": str, "bbox": [x1, y1, x2, y2], "score": float}} with coordinates normalised to '
    "[0, {coord_scale}] (x to the right, y down). Leave out phrases that are not visible."
)
NEGATIVES_PROMPT = (
    "Write {n} hard negative descriptions for the referring expression \"{expression}\". Each must "
    "keep the object noun \"{noun}\" and every other word as it is, and change {changes} of its "
    "attributes (colour, material, size, count, pattern, texture, shape, transparency, print or state) "
    "to a value that contradicts it: another basic colour or light/dark, another kind of material, the "
    "opposite state; never a synonym, a shade of the same colour or a kind of the same material. "
    "One description per line, no numbering, no other text."
)


class EndpointConfig(StrictModel):
    """An OpenAI-compatible chat-completions server (vLLM, SGLang, ...)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "default"
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = Field(8, ge=1, le=1024)
    timeout_s: float = Field(60.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    max_retries: int = Field(4, ge=0, le=20)
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(20.0, ge=0)
    max_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.2, ge=0, le=2)


class CaptionConfig(StrictModel):
    backend: Literal["sidecar", "openai", "hf_local"] = "sidecar"
    prompt_template: str = CAPTION_PROMPT
    prompt_version: str = "caption-v1"
    # sidecar: `<image>.txt` next to the image, or a metadata JSONL (`file_name`/`f_path` + `caption`/`alt_text`).
    metadata_file: str | None = None
    # hf_local: a transformers image-text-to-text model directory.
    model_dir: str | None = None
    batch_size: int = Field(4, ge=1)
    max_new_tokens: int = Field(96, ge=1)
    device: str = "cpu"  # hf_local: a torch device ("cuda", "cuda:1", ...)
    # openai: images are downscaled so that the longer side is at most this before upload.
    max_image_side: int = Field(1024, ge=32)
    short_caption_max_words: int = Field(40, ge=3)

    @model_validator(mode="after")
    def _needs(self) -> CaptionConfig:
        if self.backend == "hf_local" and not self.model_dir:
            raise ValueError("captions.backend=hf_local needs captions.model_dir")
        return self


class PhraseConfig(StrictModel):
    max_phrases: int = Field(8, ge=1)
    max_words: int = Field(7, ge=1)


class BoxConfig(StrictModel):
    backend: Literal["none", "hf_local", "openai", "metadata"] = "none"
    model_dir: str | None = None
    # metadata: boxes that come with the images, `regions` in a metadata JSONL (a file or a folder of them);
    # unset: the captions' metadata_file
    metadata_file: str | None = None
    score_threshold: float = Field(0.4, ge=0, le=1)
    nms_iou: float = Field(0.5, gt=0, le=1)
    class_agnostic_nms: bool = True
    max_regions: int = Field(10, ge=1)
    # boxes smaller than this (normalised side) after clipping are dropped as degenerate
    min_side: float = Field(0.01, ge=0, lt=1)
    batch_size: int = Field(2, ge=1)
    device: str = "cpu"  # hf_local: a torch device
    # openai: a grounding-capable VLM answering JSON boxes; images downscaled to this before upload
    prompt_template: str = GROUNDING_PROMPT
    prompt_version: str = "grounding-v1"
    coord_scale: float = Field(1.0, gt=0)
    max_image_side: int = Field(1024, ge=32)

    @model_validator(mode="after")
    def _needs(self) -> BoxConfig:
        if self.backend == "hf_local" and not self.model_dir:
            raise ValueError("boxes.backend=hf_local needs boxes.model_dir")
        return self


class NegativesConfig(StrictModel):
    backend: Literal["rules", "llm"] = "rules"
    n: int = Field(10, ge=1, le=50)
    seed: int = 0
    # hard (exactly one attribute changed; what training uses), medium (two), easy (three), trivial
    # (the noun phrase of another object of the same record), or a mix: "hard,medium", "hard:3,trivial:1"
    difficulty: str = "hard"
    # captions: replacements weighted by the attribute counts per noun in the captions being annotated
    # (the chunk's, so a resumed run makes the same negatives); lexicon: by the lexicon priors alone
    plausibility: Literal["captions", "lexicon"] = "captions"
    prompt_template: str = NEGATIVES_PROMPT
    prompt_version: str = "negatives-v2"
    # llm: more requests are made (each retried on transport errors) until n valid negatives exist;
    # what is still missing then comes from the rule-based generator (counted in provenance `checks`).
    max_attempts: int = Field(3, ge=1)

    @field_validator("difficulty", mode="before")
    @classmethod
    def _difficulty(cls, v: object) -> str:
        from fgclip_core.annotate.negatives import parse_difficulty

        if not isinstance(v, (str, list)) or (isinstance(v, list) and not all(isinstance(x, str) for x in v)):
            raise ValueError("difficulty must be a level, a comma-separated mix or a list of levels")
        mix = parse_difficulty(v)
        return ",".join(lv if w == 1 else f"{lv}:{w:g}" for lv, w in mix)


class PipelineConfig(StrictModel):
    chunk_size: int = Field(64, ge=1)
    extensions: list[str] = Field(default_factory=lambda: [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"])
    max_image_pixels: int = Field(89_478_485, ge=1)  # as the data layer's validation.max_pixels
    min_image_side: int = Field(8, ge=1)  # as the data layer's validation.min_side
    max_image_bytes: int = Field(MAX_IMAGE_BYTES, ge=1)  # as the data layer's validation.max_image_bytes


class AnnotateConfig(StrictModel):
    endpoint: EndpointConfig = Field(default_factory=EndpointConfig)
    captions: CaptionConfig = Field(default_factory=CaptionConfig)
    phrases: PhraseConfig = Field(default_factory=PhraseConfig)
    boxes: BoxConfig = Field(default_factory=BoxConfig)
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)

    @model_validator(mode="after")
    def _box_metadata(self) -> AnnotateConfig:
        if self.boxes.backend == "metadata" and not (self.boxes.metadata_file or self.captions.metadata_file):
            raise ValueError("boxes.backend=metadata needs boxes.metadata_file (or captions.metadata_file)")
        return self


def load_annotate_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> AnnotateConfig:
    return load_config(AnnotateConfig, path, overrides)
