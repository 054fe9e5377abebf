"""Multi-node training needs one run folder that every rank sees: two gloo ranks (two processes) both fail
with the same one-line reason when each has its own folder (two nodes, each with its own disk at
--output); the shared case passes in every multi-rank training test. The message itself:
tests/unit/test_train_shared_output.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fgclip_core.train.launch import free_port

pytestmark = pytest.mark.integration

RANK_SCRIPT = """
import json, os, sys
from pathlib import Path
import torch
from fgclip_core.config import ConfigError
from fgclip_core.train.shared_output import check_shared_output
torch.distributed.init_process_group("gloo")
rank = torch.distributed.get_rank()
out = Path(sys.argv[1 + rank])
if rank == 0:
    out.mkdir(parents=True, exist_ok=True)
try:
    check_shared_output(out, rank, torch.distributed.get_world_size())
    print(json.dumps({"rank": rank, "error": None}))
except ConfigError as e:
    print(json.dumps({"rank": rank, "error": str(e)}))
torch.distributed.destroy_process_group()
"""


def _two_ranks(out0: Path, out1: Path) -> list[dict]:
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(out0), str(out1)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def test_separate_folders_fail_on_every_rank(tmp_path) -> None:
    # the shared case passes in every multi-rank training test (the trainer runs the check), and
    # test_train_multinode checks that the probe is cleaned up; here: separate folders, as on two nodes
    node0, node1 = tmp_path / "node0" / "run", tmp_path / "node1" / "run"
    errors = [r["error"] for r in _two_ranks(node0, node1)]
    assert None not in errors   # every rank stops, with the same reason (each names its own --output here)
    assert errors[0].split(": ", 1)[1] == errors[1].split(": ", 1)[1]
    assert errors[0].startswith(f"--output {node0}: not one folder for all ranks (rank 1 on ")
    assert "rank 0 on" not in errors[0] and "\n" not in errors[0]
