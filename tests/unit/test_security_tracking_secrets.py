"""Issue 14, section 7 (tracking part, no MLflow server): the /health probe sends user info as Basic
auth to the host without it; the tracker keeps credentials out of everything it writes and warns;
MLflow's retry settings are bounded only for the block that asks for it."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fgclip_core.mlflow_http import (
    RETRY_ENV,
    TrackingUnavailable,
    bounded_http,
    keep_credentials_off_stdout,
    probe,
    require_reachable,
)
from fgclip_core.train.tracking import Tracker

SECRET = "pl4nted-pw"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def auth_server():
    """/health answers 200 only to Basic auth user:SECRET; records what each request carried."""
    seen: list[dict[str, str]] = []
    good = "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
            ok = self.path == "/health" and self.headers.get("Authorization") == good
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(b"OK" if ok else b"no")

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
              "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", *RETRY_ENV):
        monkeypatch.delenv(k, raising=False)


def test_probe_sends_userinfo_as_basic_auth(auth_server):
    host, seen = auth_server
    assert probe(f"http://user:{SECRET}@{host}") is None
    assert seen[-1]["path"] == "/health" and seen[-1]["auth"].startswith("Basic ")


def test_probe_uses_mlflow_credential_variables(auth_server, monkeypatch):
    host, _ = auth_server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    assert probe(f"http://{host}") is None


def test_probe_reports_refused_credentials_without_the_password(auth_server):
    host, _ = auth_server
    why = probe(f"http://user:wrong-{SECRET}@{host}")
    assert why is not None and "401" in why and SECRET not in why
    with pytest.raises(TrackingUnavailable, match=r"MLflow tracking server http://\*\*\*@127\.0\.0\.1:\d+ is not "
                                                  r"reachable \(HTTPError: HTTP Error 401"):
        require_reachable(f"http://user:wrong-{SECRET}@{host}")


def test_probe_skips_local_stores():
    assert probe("sqlite:////nonexistent/dir/mlflow.db") is None and probe("/some/folder") is None


def test_tracker_against_an_unreachable_credentialed_uri_stores_no_secret(tmp_path, caplog):
    uri = f"http://user:{SECRET}@127.0.0.1:{closed_port()}"
    t = Tracker(tmp_path, uri=uri, system_metrics=False)
    with caplog.at_level(logging.WARNING):
        t.start({"tracking": {"uri": uri}, "data": {"url": "s3://AKIA:" + SECRET + "@bucket/x"}}, {})
        t.log_metrics({"loss": 1.0}, step=1)
        t.end()
    assert t.uri.startswith("http://***@127.0.0.1:") and t.failures and t.run_id is None
    assert SECRET not in caplog.text and "not reachable" in caplog.text and "***@" in caplog.text
    assert SECRET not in json.dumps(t.failures)
    params = json.loads((tmp_path / "tracking" / "params.json").read_text())
    assert params["tracking"]["uri"] == t.uri and params["data"]["url"] == "s3://***@bucket/x"
    for f in tmp_path.rglob("*"):
        assert not f.is_file() or SECRET.encode() not in f.read_bytes(), f


def test_bounded_http_sets_and_restores_mlflow_retry_settings(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")
    with bounded_http(max_retries=1, timeout=5):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "5"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77" and "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_mlflow_run_links_are_not_printed_for_credentialed_uris(monkeypatch):
    keep_credentials_off_stdout("http://127.0.0.1:5000")
    assert "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" not in os.environ
    keep_credentials_off_stdout(f"http://user:{SECRET}@127.0.0.1:5000")
    assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"
