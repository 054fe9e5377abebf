"""Reading and writing model checkpoints (Hugging Face directory layout, official FG-CLIP keys).

Accepted inputs, told apart by ``config.json`` and by the keys present:
- FG-CLIP checkpoints written by :func:`save_model` (``model_type: fgclip``) or the official FG-CLIP
  release (CLIP-style config, state dict already holding ``position_embedding_ori/_res``);
- ``transformers`` CLIP checkpoints (``model_type: clip``): the 77 positions are resized to 248,
  ``text_filip_projection`` is copied from ``text_projection`` and the region/hard-negative logit
  scales from ``logit_scale``.
Weights are read from safetensors first; ``.bin`` files only with ``torch.load(weights_only=True)``.
Every failure is a :class:`CheckpointError` naming the file and the offending keys or shapes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fgclip_core import storage
from fgclip_core.config import ConfigError
from fgclip_core.errors import UserError
from fgclip_core.model.config import FGCLIPConfig
from fgclip_core.model.modeling import FGCLIPModel, long_positions_from_short

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_NAME = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_CANDIDATES = (SAFETENSORS_NAME, SAFETENSORS_INDEX, BIN_NAME, BIN_INDEX)
# Buffers that some writers (older transformers, the official release) put into state dicts.
IGNORED_KEY_SUFFIXES = ("embeddings.position_ids",)

MAX_INDEX_BYTES = 64 * 1024 * 1024
LONG_KEYS = ("text_model.embeddings.position_embedding_ori.weight",
             "text_model.embeddings.position_embedding_res.weight")


class CheckpointError(RuntimeError, UserError):
    """A checkpoint is missing, unreadable or does not fit the model; the message says which and why."""


# ---- locations ---------------------------------------------------------------------------------
def cache_root() -> Path:
    return Path(os.environ.get("FGCLIP_HOME", Path.home() / ".cache" / "fgclip")) / "checkpoints"


def resolve_local(path: str | Path) -> Path:
    """A local directory for ``path``; a remote URL (``s3://`` ...) is copied into the cache, keyed
    by the URL and the remote listing (names, sizes, ETags), so a rewritten checkpoint is fetched again."""
    text = str(path)
    if not storage.is_remote(text):
        return Path(text.removeprefix("file://"))
    fs, remote = storage.filesystem(text)
    remote = remote.rstrip("/")
    listing = fs.find(remote, detail=True) if fs.exists(remote) else {}
    if not listing:
        raise CheckpointError(f"{text}: checkpoint directory does not exist")
    fingerprint = json.dumps([text] + [[k, v.get("size"), str(v.get("ETag") or v.get("mtime") or v.get("LastModified"))]
                                       for k, v in sorted(listing.items())])
    dest = cache_root() / hashlib.sha256(fingerprint.encode()).hexdigest()[:20]
    if (dest / ".complete").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest.parent))
    try:
        for key in sorted(listing):
            rel = key[len(remote):].lstrip("/")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            fs.get(key, str(tmp / rel))
        (tmp / ".complete").write_text(text + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ---- reading -----------------------------------------------------------------------------------
def read_config(directory: Path) -> FGCLIPConfig:
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing; a checkpoint directory needs {CONFIG_NAME} and weights")
    try:
        return FGCLIPConfig.from_file(cfg_path)
    except ConfigError as e:
        raise CheckpointError(str(e)) from e


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # safetensors raises its own error type for truncated/corrupt files
        raise CheckpointError(f"{file}: cannot read safetensors weights (truncated or corrupt?): {e}") from e


def _read_bin(file: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{file}: cannot read weights with torch.load(weights_only=True) "
                              f"(truncated, corrupt, or holds non-tensor objects): {e}") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{file}: expected a mapping of parameter names to tensors")
    return obj


def _weight_map(index: Path) -> dict[str, str]:
    try:
        if index.stat().st_size > MAX_INDEX_BYTES:
            raise CheckpointError(f"{index}: shard index larger than {MAX_INDEX_BYTES} bytes")
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index}: not a valid shard index: {e}") from e
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) and "/" not in v and v not in ("", ".", "..")
                                                   for v in weight_map.values()):
        raise CheckpointError(f"{index}: 'weight_map' must map keys to shard file names in the same folder")
    return weight_map


def _read_index(index: Path, reader) -> dict[str, torch.Tensor]:
    weight_map = _weight_map(index)
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        file = index.parent / shard
        if not file.is_file():
            raise CheckpointError(f"{file}: shard listed in {index.name} is missing")
        out.update(reader(file))
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise CheckpointError(f"{index}: keys listed in the index are absent from the shards: {missing[:10]}")
    return out


def weights_file(directory: Path) -> Path:
    """The first weights file found in ``directory``, safetensors preferred."""
    for name in WEIGHT_CANDIDATES:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"{directory}: no weights file; expected one of {', '.join(WEIGHT_CANDIDATES)}")


def read_state_dict(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """``(state_dict, file)`` from the first weights file found, safetensors preferred."""
    file = weights_file(directory)
    if file.name == SAFETENSORS_NAME:
        return _read_safetensors(file), file
    if file.name == SAFETENSORS_INDEX:
        return _read_index(file, _read_safetensors), file
    if file.name == BIN_NAME:
        return _read_bin(file), file
    return _read_index(file, _read_bin), file


def _safetensors_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error type for truncated/corrupt headers
        raise CheckpointError(f"{file}: cannot read safetensors header (truncated or corrupt?): {e}") from e


def read_weight_shapes(directory: Path) -> tuple[dict[str, tuple[int, ...]], Path] | None:
    """Key -> shape from the safetensors header(s) alone (no tensor is read); ``None`` for ``.bin``
    weights, which have no header (their shapes are checked once loaded, see :func:`check_fits_config`)."""
    file = weights_file(directory)
    if file.name == SAFETENSORS_NAME:
        return _safetensors_shapes(file), file
    if file.name == SAFETENSORS_INDEX:
        shapes: dict[str, tuple[int, ...]] = {}
        for shard in sorted(set(_weight_map(file).values())):
            if not (file.parent / shard).is_file():
                raise CheckpointError(f"{file.parent / shard}: shard listed in {file.name} is missing")
            shapes.update(_safetensors_shapes(file.parent / shard))
        return shapes, file
    return None


_LAYER = re.compile(r"^(text_model|vision_model)\.encoder\.layers\.(\d+)\.")


def _anchor_shapes(config: FGCLIPConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shapes the config fixes for a few tensors, with the config fields that fix them."""
    t, v, d = config.text_config, config.vision_config, config.projection_dim
    th, vh = t.hidden_size, v.hidden_size
    out = {
        "text_model.embeddings.token_embedding.weight": ((t.vocab_size, th), "text vocab_size x hidden_size"),
        "text_model.embeddings.position_embedding.weight": ((t.max_position_embeddings, th),
                                                            "text max_position_embeddings x hidden_size"),
        "text_model.encoder.layers.0.mlp.fc1.weight": ((t.intermediate_size, th), "text intermediate_size x hidden_size"),
        "text_model.final_layer_norm.weight": ((th,), "text hidden_size"),
        "vision_model.embeddings.patch_embedding.weight": ((vh, v.num_channels, v.patch_size, v.patch_size),
                                                           "vision hidden_size x num_channels x patch_size^2"),
        "vision_model.embeddings.position_embedding.weight": ((v.num_patches + 1, vh),
                                                              "vision (image_size/patch_size)^2+1 x hidden_size"),
        "vision_model.embeddings.class_embedding": ((vh,), "vision hidden_size"),
        "vision_model.encoder.layers.0.mlp.fc1.weight": ((v.intermediate_size, vh),
                                                         "vision intermediate_size x hidden_size"),
        "visual_projection.weight": ((d, vh), "projection_dim x vision hidden_size"),
        "text_projection.weight": ((d, th), "projection_dim x text hidden_size"),
        "text_filip_projection.weight": ((d, th), "projection_dim x text hidden_size"),
    }
    for key in LONG_KEYS:
        out[key] = ((t.long_max_position_embeddings, th), "text long_max_position_embeddings x hidden_size")
    return out


def check_fits_config(shapes: dict[str, tuple[int, ...]], config: FGCLIPConfig, file: Path) -> None:
    """Refuse weights whose layer counts or key shapes disagree with ``config.json`` before any module
    is built (a config claiming 100000 layers must fail at once, not after building them)."""
    problems = []
    towers = {"text_model": config.text_config.num_hidden_layers, "vision_model": config.vision_config.num_hidden_layers}
    for tower, want in towers.items():
        layers = {int(m.group(2)) for k in shapes if (m := _LAYER.match(k)) and m.group(1) == tower}
        if layers != set(range(want)):
            held = f"{len(layers)} layer(s)" + (f" numbered {min(layers)}..{max(layers)}" if layers else "")
            problems.append(f"{tower}: {CONFIG_NAME} says num_hidden_layers={want}, the weights hold {held}")
    for key, (want_shape, what) in _anchor_shapes(config).items():
        if key in shapes and tuple(shapes[key]) != want_shape:
            problems.append(f"{key}: checkpoint {tuple(shapes[key])} vs model {want_shape} ({what} in {CONFIG_NAME})")
    if problems:
        raise CheckpointError(f"{file}: does not match {CONFIG_NAME}: " + "; ".join(problems[:10]))


def convert_clip_state_dict(sd: dict[str, torch.Tensor], config: FGCLIPConfig) -> dict[str, torch.Tensor]:
    """A ``transformers`` CLIP state dict -> FG-CLIP (FG-CLIP's initialisation from CLIP)."""
    out = dict(sd)
    short_key = "text_model.embeddings.position_embedding.weight"
    for key in (short_key, "text_projection.weight", "logit_scale"):
        if key not in sd:
            raise CheckpointError(f"CLIP state dict lacks {key!r}, needed to build the FG-CLIP heads")
    long = long_positions_from_short(sd[short_key], config.text_config.long_keep_positions)
    out[LONG_KEYS[0]] = long.clone()
    out[LONG_KEYS[1]] = long.clone()
    out["text_filip_projection.weight"] = sd["text_projection.weight"].clone()
    out["logit_scale_finegraind"] = sd["logit_scale"].clone()
    out["logit_scale_hardneg"] = sd["logit_scale"].clone()
    return out


def _check_keys(sd: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], file: Path) -> None:
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(k for k in set(sd) - set(expected))
    wrong = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
             for k in sorted(set(sd) & set(expected)) if tuple(sd[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:20]}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected[:20]}")
    if wrong:
        problems.append(f"shape mismatches ({len(wrong)}): {wrong[:20]}")
    if problems:
        raise CheckpointError(f"{file}: does not fit the architecture in {CONFIG_NAME}: " + "; ".join(problems))


def load_model(path: str | Path, dtype: torch.dtype | None = torch.float32) -> FGCLIPModel:
    directory = resolve_local(path)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory does not exist")
    config = read_config(directory)
    header = read_weight_shapes(directory)
    if header is not None:  # safetensors: check against the header before reading any tensor
        shapes, header_file = header
        check_fits_config(shapes, config, header_file)
    sd, file = read_state_dict(directory)
    sd = {k: v for k, v in sd.items() if not k.endswith(IGNORED_KEY_SUFFIXES)}
    if header is None:
        check_fits_config({k: tuple(v.shape) for k, v in sd.items()}, config, file)
    has_long = [k in sd for k in LONG_KEYS]
    if not any(has_long):
        log.info("%s: CLIP checkpoint without long positions: converting to FG-CLIP", file)
        sd = convert_clip_state_dict(sd, config)
    with torch.device("meta"):
        model = FGCLIPModel(config)
    _check_keys(sd, model.state_dict(), file)
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model


# ---- writing -----------------------------------------------------------------------------------
def save_model(model: FGCLIPModel, path: str | Path) -> None:
    """Write ``config.json`` + ``model.safetensors`` (local directory or URL)."""
    text = str(path)
    if storage.is_remote(text):
        with tempfile.TemporaryDirectory() as tmp:
            save_model(model, tmp)
            fs, remote = storage.filesystem(text)
            fs.makedirs(remote, exist_ok=True)
            for f in sorted(Path(tmp).iterdir()):
                fs.put(str(f), f"{remote.rstrip('/')}/{f.name}")
        return
    directory = Path(text.removeprefix("file://"))
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    partial = directory / f".{SAFETENSORS_NAME}.tmp"
    save_file(tensors, str(partial), metadata={"format": "pt"})
    os.chmod(partial, 0o644)  # a model file, not a secret (the writer creates it owner-only)
    os.replace(partial, directory / SAFETENSORS_NAME)
    model.config.save(directory / CONFIG_NAME)
