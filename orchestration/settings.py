"""The one place that holds the defaults of where things live (read from the environment at call time).

Everything goes under ``.fgclip/`` of the working directory unless ``FGCLIP_HOME`` moves it:

- ``fgclip_home()``: ``$FGCLIP_HOME`` or ``./.fgclip`` (absolute);
- ``data_url()``: ``$FGCLIP_DATA_URL`` (a path or ``s3://`` URL) or ``<home>/data``: every asset's output;
- ``raw_url()``: ``$FGCLIP_RAW_URL`` or ``<home>/raw/incoming``: the raw source whose direct subfolders
  are image batches (the default is filled with the bundled sample's first batch on first use);
- ``dagster_home()``: ``$DAGSTER_HOME`` or ``<home>/dagster_home``;
- ``dagster_storage()``: ``$FGCLIP_DAGSTER_STORAGE`` or ``sqlite``: the storage ``orchestration/instance.py``
  writes into ``dagster.yaml`` (``postgres``: the URL comes from ``$DAGSTER_PG_URL`` when Dagster starts);
- ``mlflow_tracking_uri()``: ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<home>/mlflow.db``;
- ``mlflow_ui_url()``: ``$MLFLOW_UI_URL`` or None (links then use the tracking URI when it is http(s));
- ``sensor_interval_s()``: ``$FGCLIP_SENSOR_INTERVAL_S`` or 30: how often the raw-source sensor looks;
- ``retrain_cron()``: ``$FGCLIP_RETRAIN_CRON`` or ``0 3 * * *`` (daily 03:00 UTC): scheduled retraining;
- ``keep_versions()``: ``$FGCLIP_KEEP_VERSIONS`` or 5: versioned output folders kept per model-side asset;
- ``scratch_dir()``: ``$FGCLIP_SCRATCH`` or ``<home>/scratch``: where model-side steps write before their
  outputs are copied to an ``s3://`` data URL (one temporary folder per step, removed afterwards).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SENSOR_INTERVAL_S = 30


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def fgclip_home() -> Path:
    return Path(_env("FGCLIP_HOME") or ".fgclip").resolve()


def data_url() -> str:
    return _env("FGCLIP_DATA_URL") or str(fgclip_home() / "data")


def scratch_dir() -> Path:
    return Path(_env("FGCLIP_SCRATCH") or fgclip_home() / "scratch").resolve()


def default_raw_url() -> str:
    return str(fgclip_home() / "raw" / "incoming")


def raw_url() -> str:
    return _env("FGCLIP_RAW_URL") or default_raw_url()


def raw_url_is_default() -> bool:
    return _env("FGCLIP_RAW_URL") is None


def dagster_home() -> Path:
    return Path(_env("DAGSTER_HOME") or fgclip_home() / "dagster_home").resolve()


DAGSTER_STORAGES = ("sqlite", "postgres")


def dagster_storage() -> str:
    value = (_env("FGCLIP_DAGSTER_STORAGE") or "sqlite").lower()
    if value not in DAGSTER_STORAGES:
        raise ValueError(f"FGCLIP_DAGSTER_STORAGE={value!r}: expected one of {', '.join(DAGSTER_STORAGES)}")
    return value


def mlflow_tracking_uri() -> str:
    return _env("MLFLOW_TRACKING_URI") or f"sqlite:///{fgclip_home() / 'mlflow.db'}"


def mlflow_ui_url() -> str | None:
    return _env("MLFLOW_UI_URL")


def sensor_interval_s() -> int:
    value = _env("FGCLIP_SENSOR_INTERVAL_S")
    if value is None:
        return DEFAULT_SENSOR_INTERVAL_S
    try:
        seconds = int(value)
    except ValueError:
        raise ValueError(f"FGCLIP_SENSOR_INTERVAL_S={value!r}: expected a whole number of seconds") from None
    if seconds < 1:
        raise ValueError(f"FGCLIP_SENSOR_INTERVAL_S={value!r}: must be at least 1")
    return seconds


DEFAULT_RETRAIN_CRON = "0 3 * * *"
DEFAULT_KEEP_VERSIONS = 5


def retrain_cron() -> str:
    return _env("FGCLIP_RETRAIN_CRON") or DEFAULT_RETRAIN_CRON


def keep_versions() -> int:
    value = _env("FGCLIP_KEEP_VERSIONS")
    if value is None:
        return DEFAULT_KEEP_VERSIONS
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"FGCLIP_KEEP_VERSIONS={value!r}: expected a whole number") from None
    if n < 1:
        raise ValueError(f"FGCLIP_KEEP_VERSIONS={value!r}: keep at least 1")
    return n
