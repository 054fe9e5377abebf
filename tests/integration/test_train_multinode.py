"""Two "nodes" on loopback: two torchrun agents, each ``--nnodes 2 --node_rank R --nproc_per_node 1`` with
a static rendezvous on 127.0.0.1 (how the Kubernetes training Job in ``infra/k8s/`` starts one agent per
pod), train the tiny recipe on the sample shards. The two-node run must follow the same
loss trajectory and end with the same weights as one node with ``--nproc 2`` on the same data and seed:
the ranks, the data split and the collectives are the same; only the rendezvous differs. Measured
bit-equal (losses and exported weights), so the test asks for bit equality."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fgclip_core.train.checkpoint import verify
from fgclip_core.train.launch import free_port
from fgclip_core.train.shared_output import PROBE
from tests.integration.train_run import export_weights, metrics, run_train, summary, train_env

pytestmark = pytest.mark.integration

STEPS = 3
ARGS = ("--recipe", "tiny-cpu-stage2", "--save-every", "1", "--seed", "3", "--no-progress",
        "--set", "tracking.enabled=false", "--set", "deepspeed.zero_stage=2", "--set", "data.loader.batch_size=2")


def run_two_nodes(output: Path, data: str, *args: str, timeout: float = 240) -> None:
    """Start both agents (node 0 hosts the rendezvous), wait for both; both must exit 0."""
    port = free_port()
    procs = []
    for node in (0, 1):
        workdir = output.parent / f"node{node}"   # each "machine" starts in its own folder
        workdir.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
               "-m", "fgclip_core.train", *ARGS, "--data", data, "--output", str(output), *args]
        procs.append(subprocess.Popen(cmd, env=train_env(), cwd=workdir, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for node, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"node {node} exited {p.returncode}:\n{log[-6000:]}"


def losses(output: Path) -> list[tuple[int, float]]:
    return [(m["step"], m["loss"]) for m in metrics(output)]


def test_two_nodes_match_one_node_with_two_processes(sample_shards, tiny_checkpoint_dir,
                                                               tmp_path) -> None:
    init = ("--init", str(tiny_checkpoint_dir))
    ref = tmp_path / "one-node" / "run"
    ref.parent.mkdir()
    run_train(ref, *ARGS[2:], *init, "--max-steps", str(STEPS), recipe="tiny-cpu-stage2",
              data=sample_shards.url, nproc=2)

    out = tmp_path / "two-nodes" / "run"
    out.parent.mkdir()
    run_two_nodes(out, sample_shards.url, *init, "--max-steps", str(STEPS))
    done = summary(out)   # written by global rank 0 only
    assert done["steps"] == STEPS and done["samples"] == 2 * 2 * STEPS
    tag = out / "checkpoints" / f"step-{STEPS:08d}"
    assert verify(tag) is None
    assert not (out / PROBE).exists()   # the shared-folder check (train/shared_output.py) cleaned up its probe
    # every rank's trainer state is in the checkpoint rank 0 sealed, named by global rank (not local rank, 0
    # on both nodes); resume reads the same names (train.checkpoint.rank_state_path), and resuming itself is
    # tested with --nproc 2 in test_train_shards / test_train_resume
    assert sorted(p.name for p in tag.glob("trainer_state_rank*.safetensors")) == \
        ["trainer_state_rank0.safetensors", "trainer_state_rank1.safetensors"]

    got, expected = losses(out), losses(ref)
    assert [s for s, _ in got] == [s for s, _ in expected] == list(range(1, STEPS + 1))
    # the same arithmetic in the same order (gloo on both): bit-equal, not only within float32 rounding
    assert [v for _, v in got] == [v for _, v in expected]
    assert len({round(v, 6) for _, v in expected}) > 1   # the loss moved: not a constant trajectory
    a, b = export_weights(out), export_weights(ref)
    assert a.keys() == b.keys()
    for k in b:
        assert torch.equal(a[k], b[k]), k
