"""Turn a DeepSpeed JSON from ``ds_configs/`` into the dict ``deepspeed.initialize`` gets.

Values written ``"auto"`` come from the training config (one source of truth); any ``"auto"`` left
after filling is an error, as is a file whose ZeRO stage disagrees with ``deepspeed.zero_stage``.

``zero_optimization.contiguous_gradients: "auto"`` is true on an accelerator (gradients copied into one
buffer as they are produced: no allocator fragmentation) and false on CPU, where fragmentation is no
issue and that copy of every gradient is pure cost: ZeRO-2 on one CPU rank went from +21% to +12%
over a plain PyTorch loop on the tiny model, batch 16 (``benchmarks/train_step.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fgclip_core.config import ConfigError
from fgclip_core.train.config import DS_CONFIGS_DIR, TrainConfig
from fgclip_core.train.ds_checkpoint import check_ds_config


def resolve_precision(cfg: TrainConfig, device_type: str) -> str:
    """``auto`` means bf16 on an accelerator and fp32 on CPU; fp16 was refused by the config."""
    p = cfg.deepspeed.precision
    if p == "auto":
        return "fp32" if device_type == "cpu" else "bf16"
    return p


def ds_config_path(cfg: TrainConfig) -> Path:
    if cfg.deepspeed.config:
        path = Path(cfg.deepspeed.config)
        if not path.is_file():
            path = DS_CONFIGS_DIR / cfg.deepspeed.config
        if not path.is_file():
            raise ConfigError(f"DeepSpeed config {cfg.deepspeed.config!r} not found (as a path or in {DS_CONFIGS_DIR})")
        return path
    return DS_CONFIGS_DIR / f"zero{cfg.deepspeed.zero_stage}.json"


def build_ds_config(cfg: TrainConfig, device_type: str | None = None) -> dict[str, Any]:
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    path = ds_config_path(cfg)
    try:
        ds = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read DeepSpeed config: {e}") from e
    precision = resolve_precision(cfg, device_type)
    values = {
        "train_micro_batch_size_per_gpu": cfg.data.micro_batch_size,
        "gradient_accumulation_steps": cfg.optim.grad_accum,
        "gradient_clipping": cfg.optim.grad_clip,
        "bf16.enabled": precision == "bf16",
    }
    for dotted, value in values.items():
        node = ds
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if node.get(leaf, "auto") == "auto":
            node[leaf] = value
    zero = ds.get("zero_optimization", {})
    if zero.get("contiguous_gradients") == "auto":   # only where the file asks for it (stages 2 and 3)
        zero["contiguous_gradients"] = device_type != "cpu"
    if ds.get("fp16", {}).get("enabled") not in (False, None):
        raise ConfigError(f"{path}: fp16 is not supported for FG-CLIP training (NaN losses); use bf16 or fp32")
    stage = zero.get("stage", 0)
    if stage != cfg.deepspeed.zero_stage:
        raise ConfigError(f"{path}: zero_optimization.stage is {stage} but deepspeed.zero_stage is "
                          f"{cfg.deepspeed.zero_stage}; make them agree")
    check_ds_config(ds, str(path))
    left = [k for k, v in _walk(ds) if v == "auto"]
    if left:
        raise ConfigError(f"{path}: values left as 'auto' that the trainer cannot fill: {', '.join(left)}")
    return ds


def _walk(d: dict[str, Any], prefix: str = ""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _walk(v, key + ".")
        else:
            yield key, v
