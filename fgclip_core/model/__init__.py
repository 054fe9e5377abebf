"""FG-CLIP model: architecture configs, PyTorch modules, checkpoints, tokenizer and image processor.

- ``config.py``: ``FGCLIPConfig`` (pydantic), ``load_arch(name)`` over ``configs/*.json``.
- ``modeling.py``: ``FGCLIPModel`` (HF CLIP key layout + FG-CLIP heads) and its feature methods.
- ``roi_align.py``: exact RoIAlign in PyTorch (torchvision semantics, no torchvision).
- ``checkpoint.py``: ``from_pretrained`` / ``save_pretrained`` (FG-CLIP, official release, HF CLIP).
- ``processing.py``: offline CLIP BPE tokenizer (``load_tokenizer``) and ``ImageProcessor``.
- ``build.py``: whole checkpoint directories for ``fgclip model init`` / ``fgclip model convert``.
"""

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
