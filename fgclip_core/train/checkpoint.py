"""Checkpoint folders that can be trusted: completion marker + checksums, keep-last-K, RNG state.

Layout: ``DIR/checkpoints/step-00000040/`` holds DeepSpeed's files for that tag, one
``trainer_state_rank{r}.pt`` per rank (data position, counters, RNG states) and, written last by
rank 0 after every rank has finished, ``COMPLETE.json`` listing every file with its size and
SHA-256. A folder without a valid marker (a run killed mid-save, a truncated or altered file) is
skipped with a warning when resuming and the previous one is used.
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


def rank_state_path(tag_dir: Path, rank: int) -> Path:
    return tag_dir / f"trainer_state_rank{rank}.pt"


def save_rank_state(tag_dir: Path, rank: int, state: dict[str, Any]) -> None:
    path = rank_state_path(tag_dir, rank)
    tmp = path.with_suffix(".pt.tmp")
    torch.save({**state, "rng": rng_state()}, tmp)
    os.replace(tmp, path)


def load_rank_state(tag_dir: Path, rank: int) -> dict[str, Any]:
    path = rank_state_path(tag_dir, rank)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trainer state for rank {rank} (was the checkpoint written with "
                                "a different number of processes?)")
    # our own file, written by this trainer (python/numpy RNG states need full unpickling)
    return torch.load(path, weights_only=False)
