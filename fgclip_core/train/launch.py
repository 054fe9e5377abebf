"""Process topology: one process per device, torchrun-style.

* ``fgclip train --nproc N`` (N > 1) re-launches itself under ``torch.distributed.run`` with N local
  processes on a free loopback port; a run started by ``torchrun`` or the ``deepspeed`` launcher
  (RANK/WORLD_SIZE already set; ``--local_rank`` passed) is a worker and trains directly.
* A lone process (no launcher) sets RANK=0, WORLD_SIZE=1, LOCAL_RANK=0, MASTER_ADDR=127.0.0.1 and a
  free MASTER_PORT itself, so DeepSpeed never probes MPI.
* Backend: gloo on CPU, nccl on CUDA (DeepSpeed picks the accelerator from ``DS_ACCELERATOR``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from fgclip_core.train.deepspeed_import import load_deepspeed

# A folder where spawned workers leave their one-line user error (rank-R.txt) for the parent to report once.
WORKER_ERRORS_ENV = "FGCLIP_WORKER_ERRORS"


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launched_by_launcher() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def ensure_single_process_env() -> None:
    if launched_by_launcher():
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def init_distributed() -> DistInfo:
    """Initialise torch.distributed through DeepSpeed (idempotent)."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    if os.environ["DS_ACCELERATOR"] == "":
        raise RuntimeError("DS_ACCELERATOR is set but empty: set it to cpu or cuda")
    ensure_single_process_env()
    deepspeed = load_deepspeed()

    cuda = os.environ["DS_ACCELERATOR"] == "cuda" and torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return DistInfo(torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank, device)


def barrier() -> None:
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


@dataclass
class SpawnResult:
    returncode: int
    errors: list[str]   # the workers' one-line user errors, distinct, in rank order (reported by the caller)


def spawn_local(nproc: int, module_args: list[str], env: Mapping[str, str] | None = None) -> SpawnResult:
    """Run ``python -m fgclip_core.train <module_args>`` as ``nproc`` local workers (torchrun, through
    ``quiet_launch``); a worker's user error comes back in ``errors`` instead of being printed per rank.

    ``env``: the workers' environment (default: this process's), e.g. from ``allocator.allocator_env``.
    """
    cmd = [sys.executable, "-m", "fgclip_core.train.quiet_launch", f"--nproc_per_node={nproc}", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "fgclip_core.train", *module_args]
    env = dict(os.environ if env is None else env)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    if nproc > 1:   # as torchrun does; one process keeps torch's own thread count
        env.setdefault("OMP_NUM_THREADS", "1")
    env["FGCLIP_SPAWNED"] = "1"
    with tempfile.TemporaryDirectory(prefix="fgclip-worker-errors-") as errors_dir:
        env[WORKER_ERRORS_ENV] = errors_dir
        rc = subprocess.call(cmd, env=env)
        texts = [p.read_text().strip() for p in sorted(Path(errors_dir).glob("rank-*.txt"),
                                                      key=lambda p: int(p.stem.split("-")[1]))]
    return SpawnResult(rc, list(dict.fromkeys(t for t in texts if t)))
