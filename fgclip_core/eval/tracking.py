"""Logging an evaluation to MLflow: the one place this package talks to MLflow.

Logs only when a run is active or a tracking URI is given (no server is required: a ``file:`` or
``sqlite:`` URI works). Metric names are ``eval/<benchmark>/<metric>`` with ``@`` dropped
(``i2t_R@1`` -> ``i2t_R1``) because MLflow rejects ``@`` in names; baseline values go under
``eval_baseline/``.
"""

from __future__ import annotations

import re
from pathlib import Path

_BAD = re.compile(r"[^\w.\- /:]")


def mlflow_name(*parts: str) -> str:
    return "/".join(_BAD.sub("", p.replace("@", "")) for p in parts)


def log_to_mlflow(metrics: dict[str, float], artifacts: list[tuple[Path, str]], tracking_uri: str | None = None,
                  run_name: str = "fgclip-eval", tags: dict[str, str] | None = None) -> str | None:
    """Log metrics (flattened names) and ``(file, artifact folder)`` pairs; returns the run id or ``None``."""
    import mlflow

    if tracking_uri is None and mlflow.active_run() is None:
        return None
    if tracking_uri is not None:
        mlflow.set_tracking_uri(tracking_uri)
    active = mlflow.active_run()
    run = active or mlflow.start_run(run_name=run_name)
    try:
        if tags:  # tags, not params: a run may be evaluated more than once
            mlflow.set_tags(tags)
        mlflow.log_metrics(metrics)
        for p, sub in artifacts:
            mlflow.log_artifact(str(p), artifact_path=sub)
        return run.info.run_id
    finally:
        if active is None:
            mlflow.end_run()
