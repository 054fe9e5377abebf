"""``load_deepspeed`` keeps DeepSpeed's autotuner from importing MLflow, and leaves ``import mlflow`` working."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
{before}
from fgclip_core.train.deepspeed_import import load_deepspeed
ds = load_deepspeed()
from deepspeed.autotuning import autotuner
print("mlflow_loaded_by_deepspeed", "mlflow" in sys.modules and sys.modules["mlflow"] is not None)
print("autotuner_has_mlflow", autotuner.has_mlflow)
import mlflow
print("mlflow_importable", hasattr(mlflow, "MlflowClient"))
print("same_module", load_deepspeed() is ds)
"""


def _run(before: str = "") -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", CHECK.format(before=before)], capture_output=True, text=True,
                         timeout=120, env={**__import__("os").environ, "DS_ACCELERATOR": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


def test_deepspeed_is_imported_without_mlflow_and_mlflow_still_imports_after():
    got = _run()
    assert got == {"mlflow_loaded_by_deepspeed": "False", "autotuner_has_mlflow": "False",
                   "mlflow_importable": "True", "same_module": "True"}


def test_an_already_imported_mlflow_is_left_alone():
    got = _run("import mlflow")
    assert got["mlflow_loaded_by_deepspeed"] == "True" and got["autotuner_has_mlflow"] == "True"
    assert got["mlflow_importable"] == "True"
