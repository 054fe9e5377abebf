"""Typed configs of the data layer; the field defaults here are the only source of defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fgclip_core.config import StrictModel

# The official FG-CLIP training code strips this prefix from FineHARD ``f_path`` values.
OFFICIAL_PATH_PREFIXES = ("grit-20m/data-12m/",)

# Largest image file read (bytes); the annotation stages use the same default (``annotate.config``).
MAX_IMAGE_BYTES = 64 * 1024 * 1024


class ReadConfig(StrictModel):
    """How annotation files are read and normalised into records."""

    strip_prefixes: list[str] = Field(default_factory=lambda: list(OFFICIAL_PATH_PREFIXES))
    max_record_bytes: int = Field(default=16 * 1024 * 1024, ge=1024,
                                  description="a JSONL line or array element longer than this is record_malformed")
    max_json_depth: int = Field(default=32, ge=4, description="deepest nesting of arrays/objects in one record")


class ValidationConfig(StrictModel):
    """What makes a record (and its image) acceptable."""

    num_negatives: int = Field(default=10, ge=1, description="hard negatives required when flag_short_neg is 1")
    max_pixels: int = Field(default=89_478_485, ge=1, description="decompression-bomb guard, checked from the header")
    max_image_bytes: int = Field(default=MAX_IMAGE_BYTES, ge=1,
                                 description="largest image file, checked from its size before reading")
    min_side: int = Field(default=8, ge=1, description="smallest accepted image side in pixels")
    bbox_tolerance: float = Field(default=1e-6, ge=0, le=0.01, description="coordinates this far outside [0,1] are clamped")
    check_images: bool = True
    workers: int = Field(default=1, ge=1, description="processes that read and decode images (order is kept)")


class ShardConfig(StrictModel):
    """How validated records are packed into WebDataset shards."""

    samples_per_shard: int = Field(default=1000, ge=1)
    jpeg_quality: int = Field(default=95, ge=50, le=100, description="used only when an image must be re-encoded")


class LoaderConfig(StrictModel):
    """The training input pipeline (see ``fgclip_core.data.loader``)."""

    batch_size: int = Field(default=32, ge=1)
    max_boxes: int = Field(default=4, ge=0)
    num_negatives: int = Field(default=10, ge=0)
    long_length: int = Field(default=248, ge=2)
    short_length: int = Field(default=77, ge=2)
    short_caption_prefix: str = "a photo of "
    region_text: Literal["random", "short", "long"] = "random"
    seed: int = 0
    num_workers: int = Field(default=0, ge=0)
    mode: Literal["resample", "shuffle"] = Field(
        default="resample", description="resample: endless seeded draws of shards; shuffle: each shard once per epoch")
    shuffle_buffer: int = Field(default=256, ge=1, description="samples mixed across shard boundaries (1 = off)")
    resume_block_shards: int = Field(
        default=8, ge=1, description="shards per seeded block: a resume re-reads (not decodes) at most one block per worker")
    drop_last: bool = True
    equalize_ranks: bool = Field(
        default=True, description="shuffle mode: every rank yields the same number of batches per epoch")
    decode_draft: bool = Field(default=True, description="let JPEG decode at a reduced scale near the target size")
    fast_tokenizer: Literal["auto", "on", "off"] = Field(
        default="auto", description="word-cached exact CLIP BPE (data.tokens): auto = when the tokenizer is CLIP's")
    pin_memory: bool = False
    prefetch_factor: int = Field(default=2, ge=1)
    log_bad_samples: int = Field(default=20, ge=0, description="bad samples logged per worker (all are counted)")

    @model_validator(mode="after")
    def _check(self) -> LoaderConfig:
        if self.short_length > self.long_length:
            raise ValueError(f"short_length {self.short_length} > long_length {self.long_length}")
        return self


class ShardCheckConfig(StrictModel):
    """What the loader does with a shard that does not match its manifest entry (``data.shard_check``).
    The training config's ``data`` section is one of these (``data.on_corrupt_shard``)."""

    on_corrupt_shard: Literal["fail", "skip"] = Field(
        default="fail", description="missing, other size or other sha256: fail = stop with an error naming the "
                                    "shard; skip = log it once, count it (loader.counters) and go on without it")


class DataConfig(StrictModel):
    read: ReadConfig = Field(default_factory=lambda: ReadConfig())
    validation: ValidationConfig = Field(default_factory=lambda: ValidationConfig())
    shards: ShardConfig = Field(default_factory=lambda: ShardConfig())
    loader: LoaderConfig = Field(default_factory=lambda: LoaderConfig())
