"""MLflow tracking for training, from rank 0 only, never fatal.

Every metric line is first appended to ``OUTPUT/tracking/metrics.jsonl`` (the local copy), then sent
to MLflow. If the server cannot be reached at start, or a call fails later, a warning is logged once,
MLflow is switched off for the rest of the run, and training carries on with the local copy.

Tracking URI: ``tracking.uri`` in the config, else ``$MLFLOW_TRACKING_URI``, else a SQLite database
``OUTPUT/mlflow.db`` with artifacts under ``OUTPUT/mlartifacts``. A resumed run re-opens the same
MLflow run (its id is kept in ``OUTPUT/tracking/run.json``).

Credentials: a URI with user info (``http://user:pw@host``) is handed to MLflow's client as is (it
sends them as Basic auth, as does the ``/health`` probe); ``Tracker.uri``, ``run.json``, params,
warnings and failures only ever hold the masked form (``fgclip_core.redact.redact_uri``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from fgclip_core.mlflow_http import keep_credentials_off_stdout, probe
from fgclip_core.redact import redact_text, redact_uri

log = logging.getLogger(__name__)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | tuple) else str(v)
    return out


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True,
                           text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def resolve_uri(configured: str | None, output: Path) -> str:
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(output / 'mlflow.db').resolve()}"


def _reachable(uri: str, timeout: float = 3.0) -> str | None:
    """None when usable, else the reason. Only HTTP servers are probed (files/SQLite are local)."""
    return probe(uri, timeout)


def redact_values(value: Any) -> Any:
    """``value`` (params: nested dicts/lists) with credentials in every URL-like string masked."""
    if isinstance(value, dict):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v) for v in value]
    return redact_text(value) if isinstance(value, str) else value


class Tracker:
    """Local JSONL always; MLflow while it works. Use one per run on rank 0 (``NullTracker`` elsewhere)."""

    def __init__(self, output: Path, uri: str | None = None, experiment: str = "fgclip-train",
                 run_name: str | None = None, system_metrics: bool = True, enabled: bool = True,
                 system_metrics_interval: float = 10.0):
        self.dir = output / "tracking"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._uri = resolve_uri(uri, output)  # with credentials: only for MLflow's client
        self.uri = redact_uri(self._uri)
        self.output = output
        self.experiment = experiment
        self.run_name = run_name
        self.want_system_metrics = system_metrics
        self.system_metrics_interval = system_metrics_interval
        self.enabled = enabled
        self.client: Any = None
        self.run_id: str | None = None
        self._monitor: Any = None
        self.failures: list[str] = []

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, params: dict[str, Any], tags: dict[str, str]) -> None:
        params = redact_values(params)
        (self.dir / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True, default=str))
        if not self.enabled:
            return
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        keep_credentials_off_stdout(self._uri)
        why = _reachable(self._uri)
        if why:
            self._disable(f"MLflow at {self.uri} is not reachable ({why})")
            return
        self._guard("start run", self._start_remote, params, tags)

    def _start_remote(self, params: dict[str, Any], tags: dict[str, str]) -> None:
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self._uri)
        run_file = self.dir / "run.json"
        previous = json.loads(run_file.read_text()) if run_file.is_file() else {}
        if previous.get("uri") == self.uri and previous.get("run_id"):
            self.run_id = previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            log.info("MLflow: resuming run %s", self.run_id)
        else:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                location = None
                if self._uri.startswith("sqlite:"):
                    location = (self.output / "mlartifacts").resolve().as_uri()
                exp_id = self.client.create_experiment(self.experiment, artifact_location=location)
            else:
                exp_id = exp.experiment_id
            run = self.client.create_run(exp_id, run_name=self.run_name, tags=tags)
            self.run_id = run.info.run_id
            flat = flatten(params)
            items = [Param(k, v[:6000]) for k, v in sorted(flat.items())]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i:i + 100])
            run_file.write_text(json.dumps({"uri": self.uri, "run_id": self.run_id}))
        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        if self.want_system_metrics:
            self._start_system_metrics()

    def _start_system_metrics(self) -> None:
        try:
            import mlflow
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            # the monitor logs through the process-wide tracking URI: point it at this run's store
            mlflow.set_tracking_uri(self._uri)

            self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=self.system_metrics_interval,
                                                 samples_before_logging=1)
            self._monitor.start()
        except Exception as e:
            log.warning("MLflow system metrics unavailable: %s", redact_text(str(e)))
            self._monitor = None

    def end(self, status: str = "FINISHED") -> None:
        if self._monitor is not None:
            self._guard("stop system metrics", self._monitor.finish)
            self._monitor = None
        if self.client is not None and self.run_id:
            self._guard("end run", self.client.set_terminated, self.run_id, status)

    # ---- logging -----------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = time.time()
        with (self.dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, "time": now, **metrics}) + "\n")
        if self.client is None:
            return
        from mlflow.entities import Metric

        ms = int(now * 1000)
        batch = [Metric(k, float(v), ms, step) for k, v in metrics.items()]
        self._guard("log metrics", self.client.log_batch, self.run_id, metrics=batch)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.client is None:
            return
        if path.is_dir():
            self._guard("log artifacts", self.client.log_artifacts, self.run_id, str(path), artifact_path)
        else:
            self._guard("log artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)

    # ---- failure handling --------------------------------------------------------------------
    def _guard(self, what: str, fn, *args, **kwargs) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            self._disable(f"MLflow {what} failed at {self.uri}: {type(e).__name__}: {e}")
            return None

    def _disable(self, reason: str) -> None:
        reason = redact_text(reason)
        self.failures.append(reason)
        log.warning("%s; tracking continues locally in %s", reason, self.dir)
        if self._monitor is not None:
            with contextlib.suppress(Exception):
                self._monitor.finish()
            self._monitor = None
        self.client = None


class NullTracker(Tracker):
    """What non-zero ranks get: every call does nothing."""

    def __init__(self) -> None:
        self.client = None
        self.run_id = None
        self.failures = []
        self._monitor = None

    def start(self, params: dict[str, Any], tags: dict[str, str]) -> None:
        return None

    def end(self, status: str = "FINISHED") -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        return None
