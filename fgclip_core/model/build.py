"""Complete checkpoint directories (weights + tokenizer + image processor) for `fgclip model`.

``init_checkpoint`` is what ``fgclip model init`` and the test fixture call; ``convert_checkpoint``
is ``fgclip model convert``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fgclip_core.model.checkpoint import CheckpointError, load_model, resolve_local
from fgclip_core.model.config import FGCLIPConfig, load_arch
from fgclip_core.model.modeling import FGCLIPModel
from fgclip_core.model.processing import (
    PREPROCESSOR_NAME,
    ImageProcessor,
    ImageProcessorConfig,
    build_clip_tokenizer,
    load_tokenizer,
)

log = logging.getLogger(__name__)


def random_model(config: FGCLIPConfig, seed: int = 0) -> FGCLIPModel:
    """A randomly initialised model; the same ``seed`` gives the same weights (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FGCLIPModel(config)


def init_checkpoint(arch: str | FGCLIPConfig, output: str | Path, seed: int = 0) -> Path:
    """Write a random FG-CLIP checkpoint with tokenizer and image processor into ``output``."""
    config = load_arch(arch) if isinstance(arch, str) else arch
    out = Path(output)
    model = random_model(config, seed)
    model.save_pretrained(str(out))
    build_clip_tokenizer(out)
    ImageProcessor(ImageProcessorConfig(size=config.vision_config.image_size)).save_pretrained(out)
    return out


def convert_checkpoint(source: str | Path, output: str | Path) -> list[str]:
    """A ``transformers`` CLIP (or FG-CLIP) directory -> FG-CLIP directory. Returns notes on what was
    built rather than copied (tokenizer / image processor absent from the source)."""
    src = resolve_local(source)
    out = Path(output)
    if out.resolve() == src.resolve():
        raise CheckpointError(f"{out}: output must differ from the source directory")
    model = load_model(src)
    model.save_pretrained(str(out))
    notes: list[str] = []
    try:
        load_tokenizer(src).save_pretrained(out)
    except Exception as e:  # no tokenizer in the source: build the standard one and say so
        notes.append(f"tokenizer: not loadable from {src} ({e}); wrote OpenAI's CLIP BPE tokenizer")
        build_clip_tokenizer(out)
    size = model.config.vision_config.image_size
    if (src / PREPROCESSOR_NAME).is_file():
        proc = ImageProcessor.from_pretrained(src)
        if proc.size != size:
            notes.append(f"image processor: size {proc.size} in {src / PREPROCESSOR_NAME} differs from "
                         f"the model's image_size {size}; using {size}")
        proc = ImageProcessor(proc.config.model_copy(update={"size": size}))
    else:
        notes.append(f"image processor: {src / PREPROCESSOR_NAME} absent; wrote CLIP defaults at {size}px")
        proc = ImageProcessor(ImageProcessorConfig(size=size))
    proc.save_pretrained(out)
    for n in notes:
        log.warning("%s", n)
    return notes
