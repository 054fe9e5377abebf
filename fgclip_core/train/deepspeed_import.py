"""``import deepspeed`` without the import-time cost of MLflow.

``deepspeed/__init__`` imports its autotuner, which imports MLflow when it is installed, only to log
autotuning experiments (``deepspeed --autotuning``, which this project does not use). That import is
most of DeepSpeed's own import time (measured here: 3.3-4.6 s with it, 0.7-1.0 s without), paid by
every rank of every training run, although only rank 0 tracks and does so through
``fgclip_core.train.tracking``, which imports MLflow itself when tracking is on.

So, when MLflow is not imported yet, DeepSpeed is imported while ``sys.modules["mlflow"]`` is
``None`` (its autotuner then records ``has_mlflow = False``), and the entry is removed again right
after: a later ``import mlflow`` works as always. When MLflow is already imported (a process that
tracked or registered first) nothing is changed and the cost is already paid.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType

_LOCK = threading.Lock()


def load_deepspeed() -> ModuleType:
    """The ``deepspeed`` module, imported as described above (idempotent, thread-safe)."""
    if "deepspeed" in sys.modules:
        return sys.modules["deepspeed"]
    with _LOCK:
        blocked = "mlflow" not in sys.modules
        if blocked:
            sys.modules["mlflow"] = None  # type: ignore[assignment]  # import mlflow -> ImportError here
        try:
            import deepspeed
        finally:
            if blocked and sys.modules.get("mlflow", 0) is None:
                del sys.modules["mlflow"]
    return deepspeed
