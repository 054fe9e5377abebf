"""Talking to an MLflow tracking server with bounded waits and without leaking credentials.

- :func:`probe` checks ``<uri>/health`` once, within ``timeout`` seconds. User info in the URI
  (``http://user:pw@host``) or ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` are sent as
  HTTP Basic auth (``MLFLOW_TRACKING_TOKEN`` as a Bearer token) to the host without user info, which
  is what MLflow's own client does (through ``requests``) for the same URI.
- :func:`bounded_http` sets MLflow 3's ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``..._TIMEOUT`` /
  ``..._BACKOFF_FACTOR`` for the duration of a block (MLflow reads them per request), so an
  unreachable server fails in seconds instead of minutes of retries (defaults: 7 retries, 120 s).
- :func:`keep_credentials_off_stdout`: MLflow prints "View run ... at: <URI>" with the URI's user
  info on every finished run; for a URI with credentials that printing is switched off
  (``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``, process-wide).
- :class:`TrackingUnavailable` is the user error for a server that cannot be reached.
Every message names the URI with :func:`~fgclip_core.redact.redact_uri`.
"""

from __future__ import annotations

import base64
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from fgclip_core.errors import UserError
from fgclip_core.redact import redact_text, redact_uri, strip_userinfo

RETRY_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


class TrackingUnavailable(UserError):
    """The MLflow tracking server cannot be reached (or refuses the credentials)."""


def is_http(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith(("http://", "https://"))


def _auth_header(uri: str) -> tuple[str, dict[str, str]]:
    bare, user, password = strip_userinfo(uri)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or user
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or password
    headers: dict[str, str] = {}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif user is not None:
        basic = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    return bare, headers


def keep_credentials_off_stdout(uri: str | None) -> None:
    """Stop MLflow from printing run links that would carry ``uri``'s user info."""
    if uri and is_http(uri) and strip_userinfo(uri)[1] is not None:
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def probe(uri: str, timeout: float = 3.0) -> str | None:
    """``None`` when ``uri`` is usable, else the reason (one line, credentials masked). Only HTTP(S)
    servers are probed: file and database stores are local."""
    if not is_http(uri):
        return None
    bare, headers = _auth_header(uri)
    request = urllib.request.Request(bare.rstrip("/") + "/health", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return None if r.status == 200 else f"HTTP {r.status} from /health"
    except Exception as e:  # any failure means "not usable"; the caller reports it
        return redact_text(f"{type(e).__name__}: {e}")


def require_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`TrackingUnavailable` naming the (masked) URI when :func:`probe` fails."""
    why = probe(uri, timeout)
    if why:
        raise TrackingUnavailable(f"MLflow tracking server {redact_uri(uri)} is not reachable ({why})")


@contextmanager
def bounded_http(max_retries: int = 1, timeout: int = 10, backoff_factor: int = 1) -> Iterator[None]:
    """MLflow HTTP calls inside the block give up after ``max_retries`` retries of ``timeout`` s each."""
    saved = {k: os.environ.get(k) for k in RETRY_ENV}
    os.environ.update(dict(zip(RETRY_ENV, (str(max_retries), str(timeout), str(backoff_factor)), strict=True)))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
