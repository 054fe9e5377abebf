"""Every rank must see the one run folder rank 0 writes (multi-node training needs a shared folder).

Rank 0 builds the tokenizer/processor there for every rank, each rank writes its own files into every
checkpoint step folder, and rank 0 seals the step (``COMPLETE.json``) over all of them; on nodes that each
have their own disk at ``--output`` that would fail late and obscurely (a missing processor, a checkpoint
sealed without the other nodes' files). ``check_shared_output`` finds it out at start: rank 0 writes a
random token into the folder, every rank reads it back, and every rank raises the same ``ConfigError``
naming the ranks and hosts that did not see it.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import torch

from fgclip_core.config import ConfigError

PROBE = ".fgclip-shared-probe"


def unshared_message(output: Path, reports: list[tuple[int, str, bool]]) -> str | None:
    """``reports``: (rank, host, saw rank 0's token) per rank; None when every rank saw it."""
    blind = [(r, h) for r, h, seen in reports if not seen]
    if not blind:
        return None
    who = ", ".join(f"rank {r} on {h}" for r, h in blind)
    return (f"--output {output}: not one folder for all ranks ({who} cannot see what rank 0 writes there); "
            "multi-node training needs a folder every node mounts (a shared volume, e.g. ReadWriteMany)")


def check_shared_output(output: Path, rank: int, world: int) -> None:
    """Collective (every rank calls it, after rank 0 created ``output``); no-op for one process."""
    if world == 1:
        return
    dist = torch.distributed
    probe = output / PROBE
    token = [secrets.token_hex(16) if rank == 0 else None]
    if rank == 0:
        probe.write_text(token[0] or "")
    dist.broadcast_object_list(token, src=0)
    dist.barrier()
    try:
        seen = probe.read_text() == token[0]
    except OSError:
        seen = False
    reports: list[tuple[int, str, bool] | None] = [None] * world
    dist.all_gather_object(reports, (rank, socket.gethostname(), seen))
    if rank == 0:
        probe.unlink(missing_ok=True)
    message = unshared_message(output, [r for r in reports if r is not None])
    if message:
        raise ConfigError(message)
