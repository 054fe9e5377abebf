"""Typed FG-CLIP architecture config; field defaults here are the one source of defaults.

Architectures live as JSON data in ``configs/<name>.json`` and are read with :func:`load_arch`.
``FGCLIPConfig.from_hf_dict`` maps a Hugging Face ``CLIPConfig`` mapping (``config.json`` of a
``transformers`` CLIP checkpoint or of the official FG-CLIP release) onto this schema, and
``to_hf_dict`` goes the other way (used to build same-weight ``transformers.CLIPModel`` baselines).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from fgclip_core.config import ConfigError, StrictModel, format_validation_error

Activation = Literal["quick_gelu", "gelu"]

# Upper bounds: far above any released CLIP (ViT-bigG: 48 layers, width 1664, 336 px), low enough that
# a hostile config.json is refused at once instead of building millions of modules.
MAX_LAYERS = 256
MAX_WIDTH = 16384
MAX_MLP_WIDTH = 4 * MAX_WIDTH
MAX_HEADS = 256
MAX_VOCAB = 1_000_000
MAX_POSITIONS = 4096
MAX_IMAGE_SIZE = 4096
MAX_PATCHES = 65536
MAX_CHANNELS = 4
MAX_CONFIG_BYTES = 1024 * 1024

# Token ids of OpenAI's CLIP BPE vocabulary (49408 entries).
CLIP_BOS_ID = 49406
CLIP_EOS_ID = 49407


class TextConfig(StrictModel):
    vocab_size: int = Field(49408, gt=0, le=MAX_VOCAB)
    hidden_size: int = Field(512, gt=0, le=MAX_WIDTH)
    intermediate_size: int = Field(2048, gt=0, le=MAX_MLP_WIDTH)
    num_hidden_layers: int = Field(12, gt=0, le=MAX_LAYERS)
    num_attention_heads: int = Field(8, gt=0, le=MAX_HEADS)
    max_position_embeddings: int = Field(77, gt=1, le=MAX_POSITIONS)
    long_max_position_embeddings: int = Field(248, gt=1, le=4 * MAX_POSITIONS)
    # Positions 0..keep-1 of the long table come unchanged from the short table (FG-CLIP keeps 20).
    long_keep_positions: int = Field(20, ge=0)
    hidden_act: Activation = "quick_gelu"
    layer_norm_eps: float = Field(1e-5, gt=0, le=1.0)
    bos_token_id: int = CLIP_BOS_ID
    eos_token_id: int = CLIP_EOS_ID
    pad_token_id: int = CLIP_EOS_ID

    @model_validator(mode="after")
    def _check(self) -> TextConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"text hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.long_keep_positions >= self.max_position_embeddings - 1:
            raise ValueError("long_keep_positions must be < max_position_embeddings - 1")
        expected = 4 * self.max_position_embeddings - 3 * self.long_keep_positions
        if self.long_max_position_embeddings != expected:
            raise ValueError(f"long_max_position_embeddings must be 4*{self.max_position_embeddings} - "
                             f"3*{self.long_keep_positions} = {expected} (keep, interpolate x4, "
                             f"extrapolate 4), got {self.long_max_position_embeddings}")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"{name} {getattr(self, name)} is outside the vocabulary ({self.vocab_size})")
        return self


class VisionConfig(StrictModel):
    image_size: int = Field(224, gt=0, le=MAX_IMAGE_SIZE)
    patch_size: int = Field(16, gt=0, le=MAX_IMAGE_SIZE)
    hidden_size: int = Field(768, gt=0, le=MAX_WIDTH)
    intermediate_size: int = Field(3072, gt=0, le=MAX_MLP_WIDTH)
    num_hidden_layers: int = Field(12, gt=0, le=MAX_LAYERS)
    num_attention_heads: int = Field(12, gt=0, le=MAX_HEADS)
    num_channels: int = Field(3, gt=0, le=MAX_CHANNELS)
    hidden_act: Activation = "quick_gelu"
    layer_norm_eps: float = Field(1e-5, gt=0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> VisionConfig:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.num_patches > MAX_PATCHES:
            raise ValueError(f"image_size {self.image_size} / patch_size {self.patch_size} gives {self.num_patches} "
                             f"patches, more than {MAX_PATCHES}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"vision hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        return self

    @property
    def grid_size(self) -> int:
        """Patches per side: the dense feature map is ``grid_size x grid_size``."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


class FGCLIPConfig(StrictModel):
    model_type: Literal["fgclip"] = "fgclip"
    text_config: TextConfig = Field(default_factory=TextConfig)
    vision_config: VisionConfig = Field(default_factory=VisionConfig)
    projection_dim: int = Field(512, gt=0, le=MAX_WIDTH)
    logit_scale_init_value: float = 2.6592
    initializer_range: float = Field(0.02, gt=0)
    initializer_factor: float = Field(1.0, gt=0)

    # ---- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_file(cls, path: str | Path) -> FGCLIPConfig:
        p = Path(path)
        try:
            if p.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{p}: model config larger than {MAX_CONFIG_BYTES} bytes")
            data = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ConfigError(f"{p}: cannot read model config: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a JSON object")
        return cls.from_any_dict(data, source=str(p))

    @classmethod
    def from_any_dict(cls, data: dict[str, Any], source: str = "<dict>") -> FGCLIPConfig:
        """Our own layout (``model_type: fgclip``) or a Hugging Face CLIP layout (anything else)."""
        try:
            if data.get("model_type") == "fgclip":
                return cls.model_validate(data)
            return cls.from_hf_dict(data)
        except ValidationError as e:
            raise ConfigError(f"{source}: invalid model config: {format_validation_error(e)}") from e
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{source}: invalid model config: {e}") from e

    # ---- Hugging Face CLIPConfig mapping -----------------------------------------------------
    @classmethod
    def from_hf_dict(cls, data: dict[str, Any]) -> FGCLIPConfig:
        if "text_config" not in data or "vision_config" not in data:
            raise ValueError("a CLIP config needs 'text_config' and 'vision_config' sections "
                             f"(model_type={data.get('model_type')!r})")
        if not isinstance(data["text_config"] or {}, dict) or not isinstance(data["vision_config"] or {}, dict):
            raise ValueError("'text_config' and 'vision_config' must be JSON objects")
        t, v = dict(data["text_config"] or {}), dict(data["vision_config"] or {})
        text_defaults, vision_defaults = TextConfig(), VisionConfig()

        def pick(src: dict[str, Any], defaults: StrictModel, keys: tuple[str, ...]) -> dict[str, Any]:
            return {k: src.get(k, getattr(defaults, k)) for k in keys}

        text = pick(t, text_defaults, ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                       "num_attention_heads", "max_position_embeddings", "hidden_act",
                                       "layer_norm_eps"))
        # Legacy HF CLIP configs (e.g. openai/clip-vit-base-patch16) carry eos_token_id=2 and pool
        # with argmax(input_ids); with the CLIP vocabulary that is the first 49407, i.e. real EOS.
        eos = t.get("eos_token_id", CLIP_EOS_ID)
        legacy = eos == 2
        text["eos_token_id"] = CLIP_EOS_ID if legacy else eos
        text["bos_token_id"] = CLIP_BOS_ID if legacy else t.get("bos_token_id", CLIP_BOS_ID)
        pad = t.get("pad_token_id", CLIP_EOS_ID)
        # HF CLIPTextConfig's default pad id (1) is unrelated to the tokenizer; CLIP pads with EOS.
        text["pad_token_id"] = text["eos_token_id"] if pad in (None, 1) else pad
        keep = t.get("long_keep_positions", text_defaults.long_keep_positions)
        text["long_keep_positions"] = keep
        text["long_max_position_embeddings"] = t.get(
            "long_max_position_embeddings", 4 * text["max_position_embeddings"] - 3 * keep)
        vision = pick(v, vision_defaults, ("image_size", "patch_size", "hidden_size", "intermediate_size",
                                           "num_hidden_layers", "num_attention_heads", "num_channels",
                                           "hidden_act", "layer_norm_eps"))
        return cls.model_validate({"text_config": text, "vision_config": vision,
                                   "projection_dim": data.get("projection_dim", 512),
                                   "logit_scale_init_value": data.get("logit_scale_init_value", 2.6592)})

    def to_hf_dict(self, long_text: bool = False) -> dict[str, Any]:
        """A ``transformers.CLIPConfig`` mapping with the same shapes (``long_text``: 248 positions)."""
        t, v = self.text_config, self.vision_config
        text = {k: getattr(t, k) for k in ("vocab_size", "hidden_size", "intermediate_size",
                                           "num_hidden_layers", "num_attention_heads", "hidden_act",
                                           "layer_norm_eps", "bos_token_id", "eos_token_id", "pad_token_id")}
        text["max_position_embeddings"] = t.long_max_position_embeddings if long_text else t.max_position_embeddings
        text["projection_dim"] = self.projection_dim
        vision = {k: getattr(v, k) for k in ("image_size", "patch_size", "hidden_size", "intermediate_size",
                                             "num_hidden_layers", "num_attention_heads", "num_channels",
                                             "hidden_act", "layer_norm_eps")}
        vision["projection_dim"] = self.projection_dim
        return {"model_type": "clip", "text_config": text, "vision_config": vision,
                "projection_dim": self.projection_dim, "logit_scale_init_value": self.logit_scale_init_value}


def available_archs() -> list[str]:
    folder = resources.files("fgclip_core.model") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_arch(name: str) -> FGCLIPConfig:
    """The architecture ``name`` (``tiny``, ``ViT-B-16``, ``ViT-L-14-336`` ...) from ``configs/``."""
    names = available_archs()
    if name not in names:
        raise ConfigError(f"unknown architecture {name!r}; available: {', '.join(names)}")
    res = resources.files("fgclip_core.model") / "configs" / f"{name}.json"
    try:
        return FGCLIPConfig.model_validate(json.loads(res.read_text()))
    except (json.JSONDecodeError, ValidationError) as e:
        raise ConfigError(f"{res}: invalid architecture config: {e}") from e
