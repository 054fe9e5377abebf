"""Complete checkpoint directories (weights + tokenizer + image processor) for `fgclip model`.

``init_checkpoint`` is what ``fgclip model init`` and the test fixture call; ``convert_checkpoint``
is ``fgclip model convert``. Both write to a local directory or an ``s3://`` URL.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from fgclip_core import storage
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


@contextmanager
def _local_output(output: str | Path) -> Iterator[Path]:
    """A local directory to write into; for a URL, a temporary one uploaded when the block succeeds."""
    text = str(output)
    if not storage.is_remote(text):
        out = Path(text.removeprefix("file://"))
        out.mkdir(parents=True, exist_ok=True)
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="fgclip-ckpt-") as tmp:
        yield Path(tmp)
        fs, remote = storage.filesystem(text)
        fs.makedirs(remote, exist_ok=True)
        for f in sorted(Path(tmp).iterdir()):
            fs.put(str(f), f"{remote.rstrip('/')}/{f.name}")


def init_checkpoint(arch: str | FGCLIPConfig, output: str | Path, seed: int = 0) -> Path | str:
    """Write a random FG-CLIP checkpoint with tokenizer and image processor into ``output``."""
    config = load_arch(arch) if isinstance(arch, str) else arch
    model = random_model(config, seed)
    with _local_output(output) as out:
        model.save_pretrained(str(out))
        build_clip_tokenizer(out)
        ImageProcessor(ImageProcessorConfig(size=config.vision_config.image_size)).save_pretrained(out)
    return output if storage.is_remote(str(output)) else Path(str(output).removeprefix("file://"))


def convert_checkpoint(source: str | Path, output: str | Path) -> list[str]:
    """A ``transformers`` CLIP (or FG-CLIP) directory -> FG-CLIP directory. Returns notes on what was
    built rather than copied (tokenizer / image processor absent from the source)."""
    if str(source).rstrip("/") == str(output).rstrip("/"):
        raise CheckpointError(f"{output}: output must differ from the source directory")
    src = resolve_local(source)
    model = load_model(src)
    notes: list[str] = []
    with _local_output(output) as out:
        if out.resolve() == src.resolve():
            raise CheckpointError(f"{out}: output must differ from the source directory")
        model.save_pretrained(str(out))
        try:
            load_tokenizer(src).save_pretrained(out)
        except Exception as e:  # no usable tokenizer in the source: build the standard one and say so
            notes.append(f"tokenizer: not loadable from {source} ({e}); wrote OpenAI's CLIP BPE tokenizer")
            build_clip_tokenizer(out)
        size = model.config.vision_config.image_size
        if (src / PREPROCESSOR_NAME).is_file():
            proc = ImageProcessor.from_pretrained(src, check_model=False)  # the size is replaced below
            if proc.size != size:
                notes.append(f"image processor: size {proc.size} in {PREPROCESSOR_NAME} differs from the "
                             f"model's image_size {size}; using {size}")
            proc = ImageProcessor(proc.config.model_copy(update={"size": size}))
        else:
            notes.append(f"image processor: {PREPROCESSOR_NAME} absent from {source}; wrote CLIP defaults at {size}px")
            proc = ImageProcessor(ImageProcessorConfig(size=size))
        proc.save_pretrained(out)
    for n in notes:
        log.warning("%s", n)
    return notes
