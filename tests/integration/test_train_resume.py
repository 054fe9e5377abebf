"""SIGKILL at a random step + ``--resume latest`` ends with the uninterrupted weights, bit for bit,
even when the newest checkpoint is corrupt (the previous one is used, with a warning)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest
import torch

from fgclip_core.train.checkpoint import load_rank_state, tag_for
from tests.integration.train_run import export_weights, run_train, summary, train_cmd, train_env

pytestmark = pytest.mark.integration

STEPS = 6
ARGS = ("--max-steps", str(STEPS), "--save-every", "1", "--set", "keep_last=3", "--set", "tracking.enabled=false",
        "--set", "deepspeed.zero_stage=2", "--seed", "5")


def test_kill_at_random_step_then_resume_is_bit_exact(tmp_path) -> None:
    ref = tmp_path / "uninterrupted"
    run_train(ref, *ARGS)

    rng = random.Random(os.getpid())
    kill_after = rng.randint(2, STEPS - 2)
    out = tmp_path / "killed"
    out.mkdir()
    proc = subprocess.Popen(train_cmd(out, *ARGS), env=train_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp_path)
    marker = out / "checkpoints" / tag_for(kill_after) / "COMPLETE.json"
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, f"run ended before step {kill_after} (rc={proc.returncode})"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.3))  # land anywhere in the next step (or its save)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "export").exists(), f"killed too late (after step {kill_after})"

    complete = sorted(p.parent.name for p in (out / "checkpoints").glob("step-*/COMPLETE.json"))
    newest = out / "checkpoints" / complete[-1] / "mp_rank_00_model_states.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01
    newest.write_bytes(bytes(data))

    res = run_train(out, *ARGS, "--resume", "latest")
    assert f"checkpoint {out / 'checkpoints' / complete[-1]} is not usable" in res.stderr
    s = summary(out)
    assert s["resumed_from"] == complete[-2] and s["steps"] == STEPS

    expected, got = export_weights(ref), export_weights(out)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), f"{k} differs after kill at step {kill_after} + resume"


def test_non_finite_losses_are_skipped_then_too_many_in_a_row_stop_with_a_checkpoint(tmp_path) -> None:
    out = tmp_path / "nan"
    res = run_train(out, "--max-steps", "20", "--save-every", "0", "--set", "tracking.enabled=false",
                    "--set", "max_nonfinite_in_row=3", "--set", "deepspeed.zero_stage=0",
                    check=False, data="synthetic://?samples=16&nan_at=1,4,5,6")
    assert res.returncode != 0
    assert "3 non-finite losses in a row" in res.stderr and "checkpoint" in res.stderr
    # micro-batches 0, 2, 3 trained (3 steps); 1 skipped alone; 4, 5, 6 in a row -> stop at step 3
    state = load_rank_state(out / "checkpoints" / tag_for(3), 0)
    assert state["skipped_nonfinite"] == 4 and state["position"] == 7 and state["step"] == 3
    assert (out / "checkpoints" / tag_for(3) / "COMPLETE.json").is_file()
    assert not (out / "export").exists()
