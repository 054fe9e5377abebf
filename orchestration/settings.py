"""Where the Dagster layer keeps things, from the environment with defaults under ``.fgclip/`` of the
working directory (``FGCLIP_HOME`` moves it). One source of these defaults for assets, resources,
``dagster.yaml`` and the demo. Read at call time, so a test or the demo can set the variables first.
"""

from __future__ import annotations

import os
from pathlib import Path


def fgclip_home() -> Path:
    return Path(os.environ.get("FGCLIP_HOME") or ".fgclip").resolve()


def data_url() -> str:
    """Root of every versioned output (a path or an ``s3://`` URL): ``FGCLIP_DATA_URL`` or ``<home>/data``."""
    return os.environ.get("FGCLIP_DATA_URL") or str(fgclip_home() / "data")


def raw_url() -> str:
    """The raw image source whose subfolders are image batches: ``FGCLIP_RAW_URL`` or ``<home>/incoming``."""
    return os.environ.get("FGCLIP_RAW_URL") or str(fgclip_home() / "incoming")


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or fgclip_home() / "dagster_home").resolve()


def mlflow_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{fgclip_home() / 'mlflow.db'}"


def mlflow_ui_url() -> str | None:
    """Base URL of the MLflow UI for links, when it differs from the tracking URI (``MLFLOW_UI_URL``)."""
    return os.environ.get("MLFLOW_UI_URL") or None


def retrain_cron() -> str:
    """Cron of scheduled retraining (``FGCLIP_RETRAIN_CRON``, default daily at 03:00 UTC)."""
    return os.environ.get("FGCLIP_RETRAIN_CRON") or "0 3 * * *"


def keep_versions() -> int:
    """How many versions of each model-side output folder are kept (``FGCLIP_KEEP_VERSIONS``, default 5)."""
    raw = os.environ.get("FGCLIP_KEEP_VERSIONS") or "5"
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"FGCLIP_KEEP_VERSIONS={raw!r}: not an integer") from None
    if n < 1:
        raise ValueError(f"FGCLIP_KEEP_VERSIONS={n}: keep at least 1")
    return n
