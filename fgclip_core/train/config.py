"""Typed training config: one pydantic model, whose field defaults are the only defaults.

A recipe (``recipes/<name>.yaml``) or a config file gives values; CLI flags and ``key=value``
overrides go on top; the DeepSpeed JSON (``ds_configs/``) gets its ``"auto"`` values from here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from fgclip_core.config import ConfigError, StrictModel, load_config, read_mapping
from fgclip_core.data.config import LoaderConfig, ShardCheckConfig
from fgclip_core.losses import LossConfig

RECIPES_DIR = Path(str(resources.files("fgclip_core.train") / "recipes"))
DS_CONFIGS_DIR = Path(str(resources.files("fgclip_core.train") / "ds_configs"))


# What one more text forward is worth, in padded tokens: short-mode texts are grouped by length to
# minimise rows x max_len + this x groups (huge: always one forward). See train/step.length_buckets.
DEFAULT_BUCKET_OVERHEAD = 2048


class ModelSection(StrictModel):
    arch: str = "tiny"                      # fgclip_core/model/configs/<arch>.json when starting from scratch
    init: str | None = None                 # FG-CLIP or transformers CLIP checkpoint directory
    gradient_checkpointing: bool = False
    text_bucket_overhead_tokens: int = Field(DEFAULT_BUCKET_OVERHEAD, ge=0)
    # the official stage-2 script: logit_scale_finegraind and logit_scale_hardneg start from logit_scale's
    # value whenever training starts (not on --resume: the checkpoint's values are restored)
    reset_region_scales_at_start: bool = False


class DataSection(ShardCheckConfig):
    """Where the shards are (``--data``), the data layer's own loader config (its defaults), and what to
    do with a shard that does not match the manifest (``on_corrupt_shard``, from ``ShardCheckConfig``)."""

    # shard folder / fsspec URL, several of them (read as one set, e.g. one per image batch), or
    # ``synthetic://`` (tests, benchmarks)
    url: str | list[str] | None = None
    loader: LoaderConfig = Field(default_factory=LoaderConfig)

    @property
    def micro_batch_size(self) -> int:
        return self.loader.batch_size


class OptimSection(StrictModel):
    lr: float = Field(1e-6, gt=0)
    text_lr: float | None = Field(None, gt=0)   # separate lr for the text tower (None: same as lr)
    weight_decay: float = Field(0.001, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    warmup_steps: int = Field(200, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float = Field(1.0, ge=0)         # 0 disables clipping
    grad_accum: int = Field(1, ge=1)
    # AdamW kernel: "fused" (one pass per tensor, CPU and CUDA: ~19x faster than "loop" on ZeRO's flat
    # 150M-element fp32 partition on the dev box), "foreach", or "loop" (torch's per-tensor default on CPU)
    implementation: Literal["fused", "foreach", "loop"] = "fused"
    # which parameters get no weight decay: "official" = the official FG-CLIP trainer (HF Trainer rule:
    # LayerNorm weights and every bias; embeddings and logit scales decay), "clip" = the project's grouping
    # (every 1-D parameter: norms, biases, logit scales; and class/position/token embeddings)
    no_decay: Literal["official", "clip"] = "clip"
    # cap on the three logit scales, applied to the parameters (and ZeRO's fp32 master copies) after each
    # optimizer step, as OpenAI CLIP / open_clip clamp; None = no cap (the official FG-CLIP code)
    logit_scale_max: float | None = Field(None, gt=0)


class DeepSpeedSection(StrictModel):
    zero_stage: int = Field(2, ge=0, le=3)
    config: str | None = None                    # a JSON file; default ds_configs/zero<stage>.json
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"   # auto: bf16 on GPU, fp32 on CPU

    @model_validator(mode="after")
    def _no_fp16(self) -> DeepSpeedSection:
        if self.precision == "fp16":
            raise ValueError("fp16 is not supported for FG-CLIP training: its loss overflows to NaN "
                             "(the official recipe uses bf16). Use precision bf16 (GPU) or fp32.")
        return self


class TrackingSection(StrictModel):
    enabled: bool = True
    uri: str | None = None            # default: $MLFLOW_TRACKING_URI, else sqlite under the output dir
    experiment: str = "fgclip-train"
    run_name: str | None = None
    system_metrics: bool = True
    system_metrics_interval: float = Field(10.0, gt=0)   # seconds between CPU/memory/GPU samples
    log_every: int = Field(1, ge=1)


class TrainConfig(StrictModel):
    stage: Literal[1, 2] = 2
    seed: int = 0
    max_steps: int = Field(1000, ge=1)       # optimizer steps
    save_every: int = Field(500, ge=0)       # 0: only the final checkpoint
    keep_last: int = Field(2, ge=1)
    max_nonfinite_in_row: int = Field(10, ge=1)
    export: bool = True
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    optim: OptimSection = Field(default_factory=lambda: OptimSection.model_validate({}))
    loss: LossConfig = Field(default_factory=lambda: LossConfig.model_validate({}))
    deepspeed: DeepSpeedSection = Field(default_factory=lambda: DeepSpeedSection.model_validate({}))
    tracking: TrackingSection = Field(default_factory=lambda: TrackingSection.model_validate({}))

    @model_validator(mode="after")
    def _stage_terms(self) -> TrainConfig:
        if self.stage == 2 and self.data.loader.max_boxes == 0 and (self.loss.region_weight or self.loss.hardneg_weight):
            raise ValueError("stage 2 with region/hard-negative weights needs data.loader.max_boxes >= 1")
        return self


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    p = RECIPES_DIR / f"{name}.yaml"
    if not p.is_file():
        raise ConfigError(f"unknown recipe {name!r}; shipped recipes: {', '.join(list_recipes())}")
    return p


def resolve_config(recipe: str | None = None, config_file: str | Path | None = None,
                   overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Exactly one of ``recipe`` / ``config_file``, then ``key=value`` overrides."""
    if (recipe is None) == (config_file is None):
        raise ConfigError("give exactly one of a recipe name or a config file")
    path = recipe_path(recipe) if recipe is not None else Path(config_file)  # type: ignore[arg-type]
    read_mapping(path)  # clear error for a missing/malformed file before validation
    return load_config(TrainConfig, path, overrides)
