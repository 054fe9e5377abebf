"""Checkpoint folders that can be trusted: completion marker + checksums, keep-last-K, RNG state.

Layout: ``DIR/checkpoints/step-00000040/`` holds DeepSpeed's files for that tag, one
``trainer_state_rank{r}.safetensors`` per rank (data position, counters, RNG states) and, written
last by rank 0 after every rank has finished, ``COMPLETE.json`` listing every file with its size and
SHA-256. A folder without a valid marker (a run killed mid-save, a truncated or altered file) is
skipped with a warning when resuming and the previous one is used.

``COMPLETE.json`` is a checksum, not a signature: whoever can write the folder can re-hash it. So
nothing here may run code when read. The trainer state is a safetensors file (a JSON header and raw
arrays): counters and the loader position as JSON in its metadata, the RNG states as integer
tensors. Old ``trainer_state_rank{r}.pt`` pickles are refused unread. DeepSpeed's own files go
through :mod:`fgclip_core.train.ds_checkpoint` (``weights_only`` + an allow-list).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgclip_core.hashing import sha256_file
from fgclip_core.model.checkpoint import CheckpointError

log = logging.getLogger(__name__)

MARKER = "COMPLETE.json"
TAG_RE = re.compile(r"^step-(\d{8})$")


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


def step_of(tag: str) -> int:
    m = TAG_RE.match(tag)
    if not m:
        raise ValueError(f"not a checkpoint tag: {tag!r}")
    return int(m.group(1))


def write_marker(tag_dir: Path, step: int) -> None:
    """Rank 0, after a barrier: checksum every file, then atomically publish the marker."""
    files = {}
    for p in sorted(tag_dir.rglob("*")):
        if p.is_file() and p.name != MARKER and not p.name.endswith(".tmp"):
            files[str(p.relative_to(tag_dir))] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    tmp = tag_dir / (MARKER + ".tmp")
    with tmp.open("w") as f:
        json.dump({"step": step, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, tag_dir / MARKER)
    _fsync_dir(tag_dir)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify(tag_dir: Path) -> str | None:
    """None when the checkpoint is complete and intact, else why not."""
    marker = tag_dir / MARKER
    if not marker.is_file():
        return "no completion marker (the save did not finish)"
    try:
        meta = json.loads(marker.read_text())
        files = meta["files"]
    except (OSError, ValueError, KeyError) as e:
        return f"unreadable completion marker: {e}"
    if not files:
        return "completion marker lists no files"
    for rel, info in files.items():
        p = tag_dir / rel
        if not p.is_file():
            return f"missing file {rel}"
        if p.stat().st_size != info["size"]:
            return f"{rel}: size {p.stat().st_size} != {info['size']}"
        if sha256_file(p) != info["sha256"]:
            return f"{rel}: checksum mismatch"
    return None


def list_tags(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted((p.name for p in root.iterdir() if p.is_dir() and TAG_RE.match(p.name)), key=step_of)


def latest_valid(root: Path) -> str | None:
    """Newest intact checkpoint tag, warning about every newer one that is skipped."""
    for tag in reversed(list_tags(root)):
        why = verify(root / tag)
        if why is None:
            return tag
        log.warning("checkpoint %s is not usable (%s); trying the previous one", root / tag, why)
    return None


def prune(root: Path, keep_last: int) -> list[str]:
    """Delete all but the newest ``keep_last`` complete checkpoints (and incomplete older ones)."""
    tags = list_tags(root)
    complete = [t for t in tags if (root / t / MARKER).is_file()]
    keep = set(complete[-keep_last:])
    newest_kept = step_of(complete[-1]) if complete else -1
    removed = []
    for t in tags:
        if t in keep or step_of(t) > newest_kept:  # never touch a save newer than the last complete one
            continue
        shutil.rmtree(root / t, ignore_errors=True)
        removed.append(t)
    return removed


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


STATE_FORMAT = "fgclip-trainer-state/1"
_MT_WORDS = 624                      # Mersenne Twister state words (python ``random`` and numpy's MT19937)


def rank_state_path(tag_dir: Path, rank: int) -> Path:
    return tag_dir / f"trainer_state_rank{rank}.safetensors"


def legacy_rank_state_path(tag_dir: Path, rank: int) -> Path:
    """Where versions before the safetensors format pickled the trainer state (refused, never read)."""
    return tag_dir / f"trainer_state_rank{rank}.pt"


def _rng_to_file(rng: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """RNG states as integer tensors + JSON scalars (exact: every value is an int or a repr'd float)."""
    version, words, gauss = rng["python"]
    name, keys, pos, has_gauss, cached = rng["numpy"]
    tensors = {"rng.python": torch.tensor(words, dtype=torch.int64),
               "rng.numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
               "rng.torch": rng["torch"].clone()}
    for i, t in enumerate(rng.get("cuda", [])):
        tensors[f"rng.cuda.{i}"] = t.cpu().clone()
    meta = {"python_version": version, "python_gauss": gauss, "numpy_name": name, "numpy_pos": int(pos),
            "numpy_has_gauss": int(has_gauss), "numpy_cached_gaussian": float(cached),
            "cuda_devices": len(rng.get("cuda", []))}
    return tensors, meta


def _rng_from_file(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``_rng_to_file``, checking every shape, dtype and range (ValueError otherwise)."""
    py, npk, tt = tensors.get("rng.python"), tensors.get("rng.numpy"), tensors.get("rng.torch")
    if py is None or npk is None or tt is None:
        raise ValueError("RNG tensors rng.python / rng.numpy / rng.torch missing")
    if py.dtype != torch.int64 or py.shape != (_MT_WORDS + 1,) or npk.dtype != torch.int64 or npk.shape != (_MT_WORDS,):
        raise ValueError(f"RNG state shapes {tuple(py.shape)}/{tuple(npk.shape)} are not Mersenne Twister states")
    for t in (py, npk):
        if int(t.min()) < 0 or int(t.max()) >= 2**32:
            raise ValueError("RNG state words outside 32 bits")
    if int(py[-1]) > _MT_WORDS or not 0 <= int(meta["numpy_pos"]) <= _MT_WORDS:
        raise ValueError("RNG state position outside the Mersenne Twister state")
    if tt.dtype != torch.uint8 or tt.shape != torch.get_rng_state().shape:
        raise ValueError(f"torch RNG state must be a uint8 tensor of {torch.get_rng_state().numel()} bytes, "
                         f"not {tt.dtype} {tuple(tt.shape)}")
    gauss = meta["python_gauss"]
    if not (gauss is None or isinstance(gauss, float)) or meta["numpy_name"] != "MT19937":
        raise ValueError("RNG metadata malformed")
    state: dict[str, Any] = {
        "python": (int(meta["python_version"]), tuple(py.tolist()), gauss),
        "numpy": ("MT19937", npk.numpy().astype(np.uint32), int(meta["numpy_pos"]), int(meta["numpy_has_gauss"]),
                  float(meta["numpy_cached_gaussian"])),
        "torch": tt.clone(),
    }
    n_cuda = int(meta.get("cuda_devices", 0))
    if n_cuda:
        state["cuda"] = [tensors[f"rng.cuda.{i}"] for i in range(n_cuda)]
        if any(t.dtype != torch.uint8 or t.ndim != 1 for t in state["cuda"]):
            raise ValueError("CUDA RNG states must be 1-D uint8 tensors")
    return state


def save_rank_state(tag_dir: Path, rank: int, state: dict[str, Any]) -> None:
    """``state`` must be JSON-serialisable (counters, loader position); the RNG states are added here."""
    from safetensors.torch import save_file

    path = rank_state_path(tag_dir, rank)
    tmp = path.with_name(path.name + ".tmp")
    tensors, rng_meta = _rng_to_file(rng_state())
    save_file(tensors, str(tmp), metadata={"format": STATE_FORMAT, "state": json.dumps(state, allow_nan=False),
                                           "rng": json.dumps(rng_meta)})
    os.replace(tmp, path)


def load_rank_state(tag_dir: Path, rank: int, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The state ``save_rank_state`` wrote, with ``"rng"`` ready for ``set_rng_state``.

    Reads only JSON and raw arrays (safetensors); anything else is a :class:`CheckpointError` naming the file.
    """
    from safetensors import SafetensorError, safe_open

    path = rank_state_path(tag_dir, rank)
    if not path.is_file():
        legacy = legacy_rank_state_path(tag_dir, rank)
        if legacy.is_file():
            raise CheckpointError(f"{legacy}: refused: trainer state in the old pickle format is never loaded "
                                  "(unpickling can run code); resume from a checkpoint written by this version")
        raise CheckpointError(f"{path}: no trainer state for rank {rank} (was the checkpoint written with "
                              "a different number of processes?)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a trainer state file (safetensors expected): {_one_line(e)}") from e
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, expected {STATE_FORMAT!r}")
    try:
        state = json.loads(meta["state"])
        if not isinstance(state, dict):
            raise ValueError("state is not a JSON object")
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"keys missing: {', '.join(missing)}")
        state["rng"] = _rng_from_file(tensors, json.loads(meta["rng"]))
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: malformed trainer state: {_one_line(e)}") from e
    return state


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
