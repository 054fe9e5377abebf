"""benchmarks/train_step.py runs end to end (its numbers are not checked: tests never time anything)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.train_run import REPO, train_env

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_train_step_benchmark_prints_every_figure(dtype: str) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_step.py"), "--dtype", dtype,
                           "--batch", "4", "--rounds", "1", "--iters", "1", "--warmup", "0", "--allocator", "system"],
                          env=train_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "allocator=system" in out
    assert "(OK <= 1e-5)" in out            # fused and official-shape losses agree
    for figure in ("(a) fused+trimmed step", "(b) naive (official)", "ratio a/b", "TFLOP/s", "(c) plain PyTorch loop",
                   "DeepSpeed ZeRO-2", "DeepSpeed overhead"):
        assert figure in out, f"{figure!r} missing from:\n{out}"
    assert ("torch.bfloat16" if dtype == "bf16" else "torch.float32") in out
