"""Helpers for the training integration tests: run ``fgclip train`` as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]


def train_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    env.setdefault("DS_ACCELERATOR", "cpu")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".fgclip" / "torch_extensions"))
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore::FutureWarning"
    env.update(extra)
    return env


def train_cmd(output: Path, *args: str, recipe: str = "tiny-cpu-stage2", data: str = "synthetic://?samples=16",
              nproc: int = 1) -> list[str]:
    fgclip = Path(sys.executable).with_name("fgclip")
    return [str(fgclip), "train", "--recipe", recipe, "--data", data, "--output", str(output),
            "--nproc", str(nproc), "--no-progress", *args]


def run_train(output: Path, *args: str, check: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(train_cmd(output, *args, **kw), env=train_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=output.parent)
    if check and proc.returncode != 0:
        raise AssertionError(f"fgclip train failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def summary(output: Path) -> dict:
    return json.loads((output / "summary.json").read_text())


def metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "tracking" / "metrics.jsonl").read_text().splitlines()]


def export_weights(output: Path) -> dict[str, torch.Tensor]:
    return load_file(str(output / "export" / "model.safetensors"))
