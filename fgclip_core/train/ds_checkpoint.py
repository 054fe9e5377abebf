"""DeepSpeed checkpoint files read without running code: ``torch.load(weights_only=True)`` + an allow-list.

DeepSpeed 0.19 reads every file of a checkpoint (``mp_rank_*_model_states.pt``,
``*zero_pp_rank_*_optim_states.pt``, at every ZeRO stage) through its engine's ``checkpoint_engine.load``,
and the default ``TorchCheckpointEngine`` unpickles with ``weights_only`` off: a checkpoint
folder whose files were replaced (and ``COMPLETE.json`` re-hashed) would run the replacer's code on
``--resume``. ``install`` swaps that one object for ``SafeTorchCheckpointEngine``, whose ``load`` lets the
unpickler build only tensors, plain containers and the few DeepSpeed classes its files really hold
(found by listing the globals of the checkpoints the trainer writes at ZeRO 0-3, fp32 and bf16):

* ``deepspeed.runtime.fp16.loss_scaler.LossScaler`` (the optimizer's static loss scaler),
* ``deepspeed.runtime.zero.config.ZeroStageEnum`` (the ZeRO stage of the optimizer state),
* ``deepspeed.utils.tensor_fragment.fragment_address`` (where a parameter lies in a ZeRO partition).

Anything else (``builtins.exec``, ``os.system``, a foreign class) is refused before it is built: a
:class:`~fgclip_core.model.checkpoint.CheckpointError` naming the file and the global. Configurations
that would read files by another path (universal checkpoints, DeepSpeed's fast/decoupled/datastates
writers) are refused by ``check_ds_config``. The trainer never calls DeepSpeed's ``zero_to_fp32``: the
export is written from the live parameters.
"""

from __future__ import annotations

import re
from pickle import UnpicklingError  # the exception type only: nothing here unpickles with pickle
from typing import Any

import torch

from fgclip_core.config import ConfigError
from fgclip_core.model.checkpoint import CheckpointError
from fgclip_core.train.deepspeed_import import load_deepspeed

ALLOWED_GLOBALS = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)
_GLOBAL_RE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def allowed_globals() -> list[Any]:
    """The allow-listed classes themselves (``torch.serialization.safe_globals`` takes objects)."""
    load_deepspeed()
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    found = [LossScaler, ZeroStageEnum, fragment_address]
    assert [f"{c.__module__}.{c.__qualname__}" for c in found] == list(ALLOWED_GLOBALS)
    return found


def load_deepspeed_file(path: str, map_location: Any = None) -> Any:
    """``torch.load`` of one DeepSpeed checkpoint file that can build tensors and allow-listed classes only."""
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except UnpicklingError as e:
        m = _GLOBAL_RE.search(str(e))
        what = f"it asks for {m.group(1)}" if m else _first_reason(e)
        raise CheckpointError(f"{path}: refused: {what}, which a DeepSpeed checkpoint never holds (allowed: "
                              f"tensors, containers, {', '.join(ALLOWED_GLOBALS)}); the file was altered or "
                              "is foreign. Nothing in it was run.") from e
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable DeepSpeed checkpoint file: {_first_reason(e)}") from e


def _first_reason(e: BaseException) -> str:
    text = str(e)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    return " ".join(text.split())[:300] or type(e).__name__


def _safe_engine_class():
    load_deepspeed()
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class SafeTorchCheckpointEngine(TorchCheckpointEngine):
        """DeepSpeed's torch checkpoint engine, saving as it does, loading through ``load_deepspeed_file``."""

        def load(self, path: str, map_location=None):
            return load_deepspeed_file(path, map_location=map_location)

    return TorchCheckpointEngine, SafeTorchCheckpointEngine


def install(engine: Any) -> None:
    """Replace the engine's checkpoint engine by the safe one (call right after ``deepspeed.initialize``)."""
    torch_engine, safe_engine = _safe_engine_class()
    current = engine.checkpoint_engine
    if isinstance(current, safe_engine):
        return
    if type(current) is not torch_engine:
        raise ConfigError(f"DeepSpeed checkpoint engine {type(current).__name__} is not supported: only the torch "
                          "engine can be made to load without unpickling arbitrary objects")
    safe = safe_engine.__new__(safe_engine)
    safe.__dict__.update(current.__dict__)   # same name and serialization settings, so saves are unchanged
    engine.checkpoint_engine = safe


def check_ds_config(ds: dict[str, Any], source: str) -> None:
    """Refuse DeepSpeed settings that would read checkpoint files past the safe engine."""
    ckpt = ds.get("checkpoint") or {}
    if ckpt.get("load_universal"):
        raise ConfigError(f"{source}: checkpoint.load_universal is not supported (DeepSpeed reads universal "
                          "checkpoints with full unpickling)")
    if ckpt.get("writer"):
        raise ConfigError(f"{source}: checkpoint.writer is not supported (its engines load with full unpickling)")
    if ds.get("datastates_ckpt", False) is not False:   # DeepSpeed: present and not false = on
        raise ConfigError(f"{source}: datastates_ckpt is not supported (its engine loads with full unpickling)")
