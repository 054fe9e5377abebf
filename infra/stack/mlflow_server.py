"""An MLflow tracking server on loopback: ``python -m infra.stack.mlflow_server --backend-store-uri URI ...``.

One way to start ``mlflow server`` for the whole project (``make ui``, ``make mlflow-server``, the test
fixtures): ``--workers 1`` and ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (2 processes, about 0.5 GB instead
of about 10 processes, 2 GB), bound to 127.0.0.1, waited for until ``/health`` answers.

- backend: ``--backend-store-uri`` or ``MLFLOW_BACKEND_STORE_URI`` (``sqlite:///...``, ``postgresql+psycopg2://...``;
  a URI with a password belongs in the variable, not on a command line), or ``--pg-dir DIR``: the
  ``mlflow`` database of the cluster ``infra/stack/postgres.py`` keeps in DIR (its password never leaves
  the process environment and that folder);
- artifacts: ``--artifacts-destination`` (a folder or ``s3://BUCKET/PREFIX``) is served through the server
  (clients need no S3 credentials); S3 endpoint from ``MLFLOW_S3_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL``
  (e.g. a loopback ``moto_server``), credentials from the usual ``AWS_*`` variables.

The command line form runs in the foreground and stops the server on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fgclip_core.redact import redact_uri

HOST = "127.0.0.1"


class MlflowServerError(RuntimeError):
    """The server exited or did not become healthy; the message holds the end of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def mlflow_executable() -> str:
    local = Path(sys.executable).with_name("mlflow")
    return str(local) if local.exists() else "mlflow"


def server_command(port: int, artifacts_destination: str | None = None, host: str = HOST,
                   workers: int = 1) -> list[str]:
    """The command line; the backend store URI (it may hold a password) goes by ``server_env``, never argv,
    where any local user could read it (``ps``, ``/proc/*/cmdline``)."""
    cmd = [mlflow_executable(), "server", "--host", host, "--port", str(port), "--workers", str(workers)]
    if artifacts_destination:
        cmd += ["--artifacts-destination", artifacts_destination]
    return cmd


def server_env(backend_store_uri: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: its backend store (``MLFLOW_BACKEND_STORE_URI``, read by ``mlflow server``),
    background jobs off, no client tracking URI, S3 endpoint handed to MLflow."""
    env = dict(os.environ if base is None else base)
    env["MLFLOW_BACKEND_STORE_URI"] = backend_store_uri
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.pop("MLFLOW_TRACKING_URI", None)
    if not env.get("MLFLOW_S3_ENDPOINT_URL") and env.get("AWS_ENDPOINT_URL"):
        env["MLFLOW_S3_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL"]
    return env


def healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(uri + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class MlflowServer:
    """A started server; ``uri`` is its tracking URI. ``stop()`` ends its whole process group."""

    proc: subprocess.Popen
    uri: str
    log_path: Path
    _log: IO[str] | None = field(default=None, repr=False)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(backend_store_uri: str, log_path: str | Path, *, artifacts_destination: str | None = None,
                 port: int | None = None, cwd: str | Path | None = None, timeout_s: float = 120,
                 env: Mapping[str, str] | None = None) -> MlflowServer:
    """Start ``mlflow server`` (own process group, output to ``log_path``) and wait for ``/health``."""
    port = port or free_port()
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("w")
    proc = subprocess.Popen(server_command(port, artifacts_destination),
                            cwd=cwd or log_path.parent, env=server_env(backend_store_uri, env), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    server = MlflowServer(proc, f"http://{HOST}:{port}", log_path, log)
    deadline = time.monotonic() + timeout_s
    while not healthy(server.uri):
        reason = (f"exited with {proc.returncode}" if proc.poll() is not None
                  else f"not healthy after {timeout_s:.0f} s" if time.monotonic() > deadline else None)
        if reason:
            server.stop()
            raise MlflowServerError(f"mlflow server on port {port} ({redact_uri(backend_store_uri)}) {reason}: "
                                    f"{server.log_tail()}")
        time.sleep(0.3)
    return server


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.stack.mlflow_server", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--backend-store-uri", help="sqlite:///PATH or postgresql+psycopg2://... (default: "
                     "$MLFLOW_BACKEND_STORE_URI; put a URI with a password there, not on the command line)")
    src.add_argument("--pg-dir", help="a cluster folder of infra/stack/postgres.py: its `mlflow` database")
    p.add_argument("--artifacts-destination", help="folder or s3://BUCKET/PREFIX (proxied by the server)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--log", default=None, help="server log file (default: <FGCLIP_HOME>/mlflow-server-<PORT>.log)")
    args = p.parse_args(argv)
    if not (args.backend_store_uri or args.pg_dir or os.environ.get("MLFLOW_BACKEND_STORE_URI")):
        p.error("give --backend-store-uri, --pg-dir or MLFLOW_BACKEND_STORE_URI")
    from infra.stack.postgres import Cluster, PostgresError

    try:
        backend = (args.backend_store_uri or (Cluster(Path(args.pg_dir).resolve()).url("mlflow") if args.pg_dir
                                              else os.environ["MLFLOW_BACKEND_STORE_URI"]))
        home = Path(os.environ.get("FGCLIP_HOME") or ".fgclip").resolve()
        server = start_server(backend, args.log or home / f"mlflow-server-{args.port}.log", port=args.port,
                              artifacts_destination=args.artifacts_destination, cwd=home if home.is_dir() else None)
    except (PostgresError, MlflowServerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"MLflow {server.uri} (backend {redact_uri(backend)}, artifacts {args.artifacts_destination or 'server default'};"
          f" log {server.log_path}); Ctrl-C stops it", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.proc.wait()
        print(f"error: mlflow server exited with {server.proc.returncode}: {server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
