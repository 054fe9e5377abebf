"""Logging an evaluation to MLflow: the one place this package talks to MLflow.

Logs only when a run is active or a tracking URI is given (no server is required: a ``sqlite:``
URI works). With an active run (and no other URI) the metrics go into that run, which is left
open; otherwise a new run is made in ``experiment`` at ``tracking_uri`` through an ``MlflowClient``
(the process-wide MLflow tracking URI is never changed). Metric names are
``eval/<benchmark>/<metric>`` with ``@`` dropped (``i2t_R@1`` -> ``i2t_R1``): MLflow rejects ``@``.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

_BAD = re.compile(r"[^\w.\- /:]")
DEFAULT_EXPERIMENT = "Default"


def mlflow_name(*parts: str) -> str:
    return "/".join(_BAD.sub("", p.replace("@", "")) for p in parts)


def log_to_mlflow(metrics: dict[str, float], artifacts: list[tuple[Path, str]], tracking_uri: str | None = None,
                  run_name: str = "fgclip-eval", tags: dict[str, str] | None = None,
                  experiment: str = DEFAULT_EXPERIMENT) -> str | None:
    """Log metrics (flattened names) and ``(file, artifact folder)`` pairs; returns the run id or ``None``."""
    if tracking_uri is None and "mlflow" not in sys.modules:
        return None  # no run can be active in a process that never imported mlflow (saves ~4 s)
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    active = mlflow.active_run()
    if active is not None and tracking_uri in (None, mlflow.get_tracking_uri()):
        client, run_id, own = MlflowClient(), active.info.run_id, False
    elif tracking_uri is not None:
        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
        run_id, own = client.create_run(exp_id, run_name=run_name).info.run_id, True
    else:
        return None
    try:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for k, v in (tags or {}).items():  # tags, not params: a run may be evaluated more than once
            client.set_tag(run_id, k, v)
        for p, sub in artifacts:
            client.log_artifact(run_id, str(p), artifact_path=sub)
    except Exception:
        if own:
            client.set_terminated(run_id, status="FAILED")
        raise
    if own:
        client.set_terminated(run_id)
    return run_id
