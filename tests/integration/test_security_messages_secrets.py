"""Issue 14, section 7: messages and secrets, through the real `fgclip` command.

- user errors print one `error: ...` line and exit non-zero, without a traceback; `--debug` shows it;
- an unreachable MLflow server (a closed loopback port): `fgclip eval` writes every file and reports
  the tracking failure in one line; `fgclip registry register/promote` fail with one line naming the
  (masked) URI instead of minutes of retries;
- a password planted in `MLFLOW_TRACKING_URI` (`http://user:password@host`) reaches the live server
  (tracking stays on: the probe and MLflow's client both send it as Basic auth) and appears in none
  of the run's outputs: stdout/stderr, logs, summary.json, every file of the run folder, the MLflow
  server's database, artifacts and log."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fgclip_core.cli import cli
from fgclip_core.eval import sample_benchmarks as L
from tests.integration.train_run import REPO, summary, train_cmd, train_env

pytestmark = pytest.mark.integration

SECRET = "Planted-S3cret-7f3a"
FGCLIP = str(Path(sys.executable).with_name("fgclip"))
# A bound for commands that must fail fast: a hang (minutes of retries) fails the test; no timing is asserted.
FAST = 120


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_secret(uri: str) -> str:
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://fgclip-user:{SECRET}@{rest}"


def fgclip(*args: str, env: dict[str, str] | None = None, timeout: float = FAST) -> subprocess.CompletedProcess:
    return subprocess.run([FGCLIP, *args], env=env or train_env(), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def files_holding(root: Path, needle: str) -> list[str]:
    raw = needle.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and raw in p.read_bytes()]


@pytest.fixture(scope="module")
def fgovd_file(sample_set, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench-sec") / "fgovd.jsonl"
    L.write_fgovd(sample_set, path, negatives=3)
    return path


# ---- one line, no traceback; --debug shows it ---------------------------------------------------
def test_missing_init_is_one_line_and_debug_shows_the_traceback(tmp_path):
    args = ("train", "--recipe", "tiny-cpu-stage1", "--data", "synthetic://?samples=4", "--init",
            str(tmp_path / "absent"), "--output", str(tmp_path / "run"), "--max-steps", "1", "--no-progress")
    r = fgclip(*args, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout
    assert error_lines(r.stderr) == [f"error: {tmp_path / 'absent'}: checkpoint directory does not exist"]
    d = fgclip("--debug", *args, timeout=300)
    assert d.returncode == 1 and "Traceback (most recent call last)" in d.stderr and "CheckpointError" in d.stderr
    assert len(error_lines(d.stderr)) == 1


def test_a_user_error_in_spawned_workers_is_one_line_not_one_per_rank(tmp_path):
    """--nproc 2: both workers fail on the same missing --init; the parent reports it once, and
    torchrun's launcher traceback and failure table stay out of the user's way."""
    r = fgclip("train", "--recipe", "tiny-cpu-stage1", "--data", "synthetic://?samples=4", "--init",
               str(tmp_path / "absent"), "--output", str(tmp_path / "run"), "--max-steps", "1", "--no-progress",
               "--nproc", "2", timeout=300)
    out = r.stderr + r.stdout
    assert r.returncode == 1 and "Traceback" not in out and "ChildFailedError" not in out, out[-3000:]
    assert error_lines(r.stderr) == [f"error: {tmp_path / 'absent'}: checkpoint directory does not exist"]


def test_data_without_manifest_is_one_line(tmp_path):
    (tmp_path / "shards").mkdir()
    r = fgclip("train", "--recipe", "tiny-cpu-stage1", "--data", str(tmp_path / "shards"), "--output",
               str(tmp_path / "run"), "--max-steps", "1", "--no-progress", timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and "manifest" in lines[0] and str(tmp_path / "shards") in lines[0], r.stderr[-3000:]


def test_python_m_train_honours_fgclip_debug(tmp_path):
    cmd = [sys.executable, "-m", "fgclip_core.train", "--config",
           str(tmp_path / "absent.yaml"), "--output", str(tmp_path / "run")]
    r = subprocess.run(cmd, env=train_env(), capture_output=True, text=True, timeout=FAST, cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(error_lines(r.stderr)) == 1 and "absent.yaml" in r.stderr
    d = subprocess.run(cmd, env=train_env(FGCLIP_DEBUG="1"), capture_output=True, text=True, timeout=FAST, cwd=REPO)
    assert d.returncode == 2 and "Traceback (most recent call last)" in d.stderr


# ---- unreachable MLflow ------------------------------------------------------------------------
def test_eval_with_unreachable_mlflow_writes_everything_and_warns_once(tiny_checkpoint_dir, fgovd_file, sample_set,
                                                                       tmp_path, caplog):
    uri = with_secret(f"http://127.0.0.1:{closed_port()}")
    out = tmp_path / "eval"
    with caplog.at_level(logging.WARNING):
        r = CliRunner().invoke(cli, ["eval", "fgovd", "--model", str(tiny_checkpoint_dir), "--data", str(fgovd_file),
                                     "--images", str(sample_set.images_root), "--output", str(out), "--no-progress",
                                     "--tracking-uri", uri])
    assert r.exit_code == 0, r.output
    for name in ("metrics.json", "details.jsonl", "result.json", "report.html", "report.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text())["metrics"]["accuracy"] >= 0.0
    warnings = [rec.getMessage() for rec in caplog.records if "MLflow" in rec.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "is not reachable" in warnings[0] and "http://***@127.0.0.1:" in warnings[0]
    assert SECRET not in r.output + "".join(warnings) and files_holding(out, SECRET) == []


@pytest.mark.parametrize("command", ["register", "promote"])
def test_registry_with_unreachable_mlflow_fails_with_one_line(tiny_checkpoint_dir, command):
    port = closed_port()
    uri = with_secret(f"http://127.0.0.1:{port}")
    args = (["registry", "register", "--model", str(tiny_checkpoint_dir), "--name", "fgclip-sec"]
            if command == "register" else ["registry", "promote", "--name", "fgclip-sec", "--version", "1",
                                           "--metric", "fgovd/accuracy"])
    r = fgclip(*args, "--tracking-uri", uri)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith(f"error: MLflow tracking server http://***@127.0.0.1:{port} is not reachable")
    assert SECRET not in r.stderr + r.stdout


# ---- planted secret in MLFLOW_TRACKING_URI -----------------------------------------------------
@pytest.fixture(scope="module")
def secret_run(tmp_path_factory, mlflow_server):
    out = tmp_path_factory.mktemp("secret") / "run"
    uri = with_secret(mlflow_server)
    proc = subprocess.run(train_cmd(out, "--max-steps", "3", "--set", "data.loader.batch_size=4",
                                    "--set", "tracking.experiment=secret-planted",
                                    "--set", "tracking.system_metrics_interval=0.5",
                                    data="synthetic://?samples=8", recipe="tiny-cpu-stage1"),
                          env=train_env(MLFLOW_TRACKING_URI=uri), capture_output=True, text=True, timeout=600,
                          cwd=out.parent)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out, proc, mlflow_server


def test_tracking_stays_on_with_userinfo_in_the_uri(secret_run):
    from mlflow.tracking import MlflowClient

    out, _, server = secret_run
    s = summary(out)
    assert s["tracking_failures"] == [] and s["run_id"]
    assert s["tracking_uri"] == server.replace("http://", "http://***@")
    run = MlflowClient(server).get_run(s["run_id"])
    assert run.info.status == "FINISHED" and "loss" in run.data.metrics


def test_planted_secret_is_in_no_output_of_the_run(secret_run, tmp_path_factory):
    out, proc, _ = secret_run
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert "***@" in proc.stdout  # the printed summary names the masked URI
    assert files_holding(out, SECRET) == []
    # the MLflow store: database, artifacts, server log (the server fixture's folder)
    stores = list(tmp_path_factory.getbasetemp().glob("mlflow-server*"))
    assert stores and [f for root in stores for f in files_holding(root, SECRET)] == []


def test_eval_against_the_live_server_with_userinfo_stores_no_secret(tiny_checkpoint_dir, fgovd_file, sample_set,
                                                                     mlflow_server, tmp_path, tmp_path_factory):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "eval"
    r = CliRunner().invoke(cli, ["eval", "fgovd", "--model", str(tiny_checkpoint_dir), "--data", str(fgovd_file),
                                 "--images", str(sample_set.images_root), "--output", str(out), "--no-progress",
                                 "--tracking-uri", with_secret(mlflow_server)])
    assert r.exit_code == 0, r.output
    assert SECRET not in r.output and files_holding(out, SECRET) == []
    runs = MlflowClient(mlflow_server).search_runs(
        [e.experiment_id for e in MlflowClient(mlflow_server).search_experiments()],
        filter_string="attributes.run_name = 'fgclip-eval'")
    assert runs and any(k.startswith("eval/") and k.endswith("/accuracy") for run in runs for k in run.data.metrics)
    stores = list(tmp_path_factory.getbasetemp().glob("mlflow-server*"))
    assert [f for root in stores for f in files_holding(root, SECRET)] == []
