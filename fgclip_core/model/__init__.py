"""FG-CLIP model: architecture configs, PyTorch modules, checkpoints, tokenizer and image processor."""

from fgclip_core.model.checkpoint import CheckpointError
from fgclip_core.model.config import FGCLIPConfig, TextConfig, VisionConfig, available_archs, load_arch
from fgclip_core.model.modeling import FGCLIPModel, ImageEncoding
from fgclip_core.model.processing import (
    FGCLIPTokenizer,
    ImageProcessor,
    TokenizerError,
    build_clip_tokenizer,
    load_tokenizer,
)

__all__ = [
    "CheckpointError",
    "FGCLIPConfig",
    "FGCLIPModel",
    "FGCLIPTokenizer",
    "ImageEncoding",
    "ImageProcessor",
    "TextConfig",
    "TokenizerError",
    "VisionConfig",
    "available_archs",
    "build_clip_tokenizer",
    "load_arch",
    "load_tokenizer",
]
