"""Tokenizer and image processor, loaded from and saved to a checkpoint directory (HF layout).

The tokenizer is OpenAI's CLIP BPE (49408 ids). :func:`build_clip_tokenizer` builds it offline from
the merges file shipped in the ``open-clip-torch`` wheel (located with ``importlib.util.find_spec``;
open_clip itself is never imported because it pulls torchvision), writes it with
``transformers.CLIPTokenizer.save_pretrained`` and checks the reloaded fast tokenizer on known ids.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field, ValidationError, field_validator

from fgclip_core.config import ConfigError, StrictModel, format_validation_error
from fgclip_core.errors import UserError
from fgclip_core.model.config import MAX_CONFIG_BYTES, MAX_IMAGE_SIZE, FGCLIPConfig, TextConfig

TextMode = Literal["long", "short"]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESSOR_NAME = "preprocessor_config.json"
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# OpenAI's tokenizer uses the first 49152 - 256 - 2 merges of the file.
NUM_MERGES = 49152 - 256 - 2
# Known ids of OpenAI's tokenizer, used to verify a built or loaded tokenizer.
KNOWN_IDS = {"a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407]}


CLIP_TOKENIZER_CLASSES = ("CLIPTokenizer", "CLIPTokenizerFast")


class TokenizerError(RuntimeError, UserError):
    """The tokenizer cannot be built or loaded, or gives ids that differ from OpenAI's CLIP BPE."""


# ---- tokenizer ---------------------------------------------------------------------------------
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table (every byte gets a visible stand-in)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars), strict=True))


def clip_bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError("the open-clip-torch wheel is not installed; it ships the CLIP BPE merges "
                             f"({BPE_FILE}). Install it with `pip install --no-deps open-clip-torch==3.3.0`")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / BPE_FILE
        if path.is_file():
            return path
    raise TokenizerError(f"{BPE_FILE} not found in {list(spec.submodule_search_locations)}")


def clip_vocab_and_merges(bpe_path: Path | None = None) -> tuple[dict[str, int], list[str]]:
    """OpenAI CLIP's vocabulary (token -> id) and merges, in OpenAI's order."""
    path = bpe_path or clip_bpe_path()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1:NUM_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def _verify(tok, where: str) -> None:
    for text, ids in KNOWN_IDS.items():
        got = tok(text)["input_ids"]
        if list(got) != ids:
            raise TokenizerError(f"{where}: tokenizer gives {list(got)} for {text!r}, expected OpenAI CLIP ids {ids}")


def build_clip_tokenizer(out_dir: str | Path) -> None:
    """Write OpenAI's CLIP tokenizer (HF layout) into ``out_dir`` and verify it after reloading."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # transformers 5: CLIPTokenizer is the tokenizers-backed class and takes the vocabulary and
    # merges as data (building it from file paths silently gives a 3-token vocabulary).
    # Its annotation says list[str], but the tokenizers BPE model needs (left, right) pairs.
    pairs: Any = [tuple(m.split()) for m in merges]
    tok = CLIPTokenizer(vocab=vocab, merges=pairs, pad_token="<|endoftext|>",
                        model_max_length=TextConfig().max_position_embeddings)
    tok.save_pretrained(str(out))
    _verify(CLIPTokenizer.from_pretrained(str(out)), str(out))


class FGCLIPTokenizer:
    """Fixed-length batch encoding: ``long`` (248) or ``short`` (77) ids, padded with ``pad_token_id``;
    longer texts are truncated with EOS kept as the last real token."""

    def __init__(self, hf_tokenizer, short_length: int | None = None, long_length: int | None = None) -> None:
        defaults = TextConfig()
        self.hf = hf_tokenizer
        self.lengths: dict[str, int] = {
            "short": short_length or defaults.max_position_embeddings,
            "long": long_length or defaults.long_max_position_embeddings,
        }
        if self.hf.pad_token_id is None or self.hf.eos_token_id is None:
            raise TokenizerError("tokenizer has no pad or eos token")

    @property
    def pad_token_id(self) -> int:
        return int(self.hf.pad_token_id)

    @property
    def eos_token_id(self) -> int:
        return int(self.hf.eos_token_id)

    @property
    def bos_token_id(self) -> int:
        return int(self.hf.bos_token_id)

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def max_length(self, mode: TextMode) -> int:
        if mode not in self.lengths:
            raise ValueError(f"mode must be 'long' or 'short', got {mode!r}")
        return self.lengths[mode]

    def encode(self, texts: Sequence[str], mode: TextMode = "long") -> torch.Tensor:
        """``LongTensor [N, 248 | 77]``."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings, got a single str")
        length = self.max_length(mode)
        if not texts:
            return torch.empty(0, length, dtype=torch.long)
        enc = self.hf(list(texts), padding="max_length", truncation=True, max_length=length,
                      return_attention_mask=False, return_tensors="np")
        return torch.from_numpy(np.asarray(enc["input_ids"], dtype=np.int64))

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return self.hf.decode(ids, skip_special_tokens=True)

    def save_pretrained(self, out_dir: str | Path) -> None:
        self.hf.save_pretrained(str(out_dir))


def clip_tokenizer() -> FGCLIPTokenizer:
    """OpenAI CLIP's tokenizer with the default lengths (248 long / 77 short), built offline from the BPE
    file that ships with open_clip (every shipped architecture uses it)."""
    with tempfile.TemporaryDirectory(prefix="fgclip-tok-") as d:
        build_clip_tokenizer(d)
        return load_tokenizer(d)


def load_tokenizer(directory: str | Path) -> FGCLIPTokenizer:
    """The tokenizer saved in a checkpoint directory (checked against OpenAI CLIP ids); lengths come
    from the directory's ``config.json`` when it holds a model config."""
    from transformers import AutoTokenizer, CLIPTokenizer

    from fgclip_core.model.checkpoint import resolve_local

    d = resolve_local(directory)
    if not any((d / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        raise TokenizerError(f"{d}: no tokenizer files (tokenizer.json / vocab.json + merges.txt)")
    try:
        tok_cfg = json.loads((d / "tokenizer_config.json").read_text()) if (d / "tokenizer_config.json").is_file() else {}
        # CLIPTokenizer directly: AutoTokenizer would also parse config.json, whose model_type it does not know.
        cls = CLIPTokenizer if tok_cfg.get("tokenizer_class", "CLIPTokenizer") in CLIP_TOKENIZER_CLASSES else AutoTokenizer
        hf = cls.from_pretrained(str(d))
    except Exception as e:
        raise TokenizerError(f"{d}: cannot load tokenizer: {e}") from e
    _verify(hf, str(d))
    short = long = None
    if (d / "config.json").is_file():
        try:
            t = FGCLIPConfig.from_file(d / "config.json").text_config
            short, long = t.max_position_embeddings, t.long_max_position_embeddings
        except ConfigError:
            pass  # a tokenizer-only directory may hold an unrelated config; lengths stay the CLIP defaults
    return FGCLIPTokenizer(hf, short, long)


# ---- images ------------------------------------------------------------------------------------
class ImageProcessorConfig(StrictModel):
    """Square size in pixels and per-channel (RGB) mean/std of pixels scaled to [0, 1]."""

    size: int = Field(224, gt=0, le=MAX_IMAGE_SIZE, strict=True)
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    @field_validator("image_mean")
    @classmethod
    def _mean_in_range(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in v):
            raise ValueError(f"each image_mean value must be in [0, 1] (pixels are scaled to [0, 1]), got {list(v)}")
        return v

    @field_validator("image_std")
    @classmethod
    def _std_positive(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(x) and 1e-6 <= x <= 10.0 for x in v):
            raise ValueError(f"each image_std value must be in [1e-6, 10] (it divides the pixels), got {list(v)}")
        return v


class ImageProcessor:
    """RGB, bicubic resize to ``size x size`` (no crop), scale to [0, 1], CLIP mean/std."""

    def __init__(self, config: ImageProcessorConfig | None = None, **kwargs) -> None:
        self.config = config or ImageProcessorConfig(**kwargs)
        mean = np.asarray(self.config.image_mean, dtype=np.float32)
        std = np.asarray(self.config.image_std, dtype=np.float32)
        self._mean, self._std = mean, std

    @property
    def size(self) -> int:
        return self.config.size

    def preprocess_one(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        s = self.config.size
        if image.size != (s, s):
            image = image.resize((s, s), resample=Image.Resampling.BICUBIC)
        arr = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
        arr = (arr - self._mean) / self._std
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if isinstance(images, Image.Image):
            images = [images]
        if not images:
            return torch.empty(0, 3, self.size, self.size)
        return torch.stack([self.preprocess_one(im) for im in images])

    def to_hf_dict(self) -> dict:
        s = self.config.size
        return {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True, "size": {"height": s, "width": s}, "resample": int(Image.Resampling.BICUBIC),
            "do_center_crop": False, "crop_size": {"height": s, "width": s},
            "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": list(self.config.image_mean),
            "image_std": list(self.config.image_std), "do_convert_rgb": True,
        }

    def save_pretrained(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / PREPROCESSOR_NAME).write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, check_model: bool = True) -> ImageProcessor:
        """Read ``preprocessor_config.json``; a CLIP crop size (or shortest edge) becomes the square size.

        ``check_model``: when the directory's ``config.json`` is a model config, the size must equal its
        vision ``image_size`` (a mismatch would only fail later, inside the model)."""
        from fgclip_core.model.checkpoint import resolve_local

        folder = resolve_local(directory)
        path = folder / PREPROCESSOR_NAME
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{path}: image processor config larger than {MAX_CONFIG_BYTES} bytes")
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ConfigError(f"{path}: cannot read image processor config: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        size = _square_size(data, path)
        try:
            config = ImageProcessorConfig(size=size, image_mean=_triple(data, "image_mean", CLIP_MEAN, path),
                                          image_std=_triple(data, "image_std", CLIP_STD, path))
        except ValidationError as e:
            raise ConfigError(f"{path}: invalid image processor config: {format_validation_error(e)}") from e
        if check_model and (folder / "config.json").is_file():
            try:
                vision = FGCLIPConfig.from_file(folder / "config.json").vision_config
            except ConfigError:
                vision = None  # not a model config (the model loader reports a broken one itself)
            if vision is not None and vision.image_size != size:
                raise ConfigError(f"{path}: size {size} differs from the model's vision image_size "
                                  f"{vision.image_size} in config.json")
        return cls(config)


def _triple(data: dict, key: str, default: tuple[float, float, float], path: Path) -> tuple:
    v = data.get(key, default)
    if not isinstance(v, list | tuple) or len(v) != 3 or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in v):
        raise ConfigError(f"{path}: {key} must be a list of 3 numbers (R, G, B), got {v!r}"[:300])
    return tuple(float(x) for x in v)


def _square_size(data: dict, path: Path) -> int:
    def whole(x) -> int:
        if not isinstance(x, int) or isinstance(x, bool):
            raise ConfigError(f"{path}: image size must be a whole number of pixels, got {x!r}"[:300])
        return x

    def side(v) -> int | None:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, dict):
            if "height" in v and "width" in v:
                if v["height"] != v["width"]:
                    raise ConfigError(f"{path}: non-square size {v} is not supported")
                return whole(v["height"])
            if "shortest_edge" in v:
                return whole(v["shortest_edge"])
        return None

    crop = side(data.get("crop_size")) if data.get("do_center_crop") else None
    size = crop or side(data.get("size"))
    if size is None:
        raise ConfigError(f"{path}: no usable 'size' / 'crop_size'")
    return size
