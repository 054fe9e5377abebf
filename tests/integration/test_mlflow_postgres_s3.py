"""MLflow tracking server on PostgreSQL with artifacts on S3 (moto on loopback), started by
``infra.stack.mlflow_server``: the project's registry code registers, aliases and loads a model through it;
the version lands in Postgres and the artifacts in the bucket, proxied by the server (no S3 access here)."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import mlflow
import psycopg2
import pytest
import torch
from mlflow import MlflowClient

from fgclip_core.model import FGCLIPModel, load_tokenizer
from fgclip_core.registry import CHALLENGER, CHAMPION, embeddings, load_embedder, promote, register_checkpoint
from infra.stack.mlflow_server import start_server

pytestmark = pytest.mark.integration

NAME = "fgclip-pg-s3"


def _argv_holding(secret: str) -> list[int]:
    """Processes (not this one) whose command line contains ``secret`` (what ``ps`` shows any local user)."""
    hits = []
    for f in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if int(f.parent.name) != os.getpid() and secret.encode() in f.read_bytes():
                hits.append(int(f.parent.name))
        except (OSError, ValueError):
            continue
    return hits


def test_registry_through_a_server_on_postgres_and_s3(postgres, moto_s3, tiny_checkpoint_dir, tmp_path,
                                                     monkeypatch):
    import pandas as pd

    destination = moto_s3.new_prefix("mlflow-artifacts")
    previous_uri = mlflow.get_tracking_uri()
    with start_server(postgres.url("mlflow"), tmp_path / "server.log", artifacts_destination=destination) as server:
        # the backend URI holds the Postgres password: it goes to the server by environment, never argv
        assert _argv_holding(postgres.password()) == []
        # The server has the S3 endpoint; this process must not need it (artifacts go through the server).
        for name in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        try:
            v1 = register_checkpoint(tiny_checkpoint_dir, NAME, metrics={"fgovd/accuracy": 0.5},
                                     tracking_uri=server.uri)
            assert promote(NAME, v1.version, "fgovd/accuracy", tracking_uri=server.uri).promoted
            client = MlflowClient(server.uri)
            for alias in (CHALLENGER, CHAMPION):
                assert str(client.get_model_version_by_alias(NAME, alias).version) == v1.version
            got = embeddings(load_embedder(f"models:/{NAME}@{CHAMPION}").predict(
                pd.DataFrame({"text": ["a red square"], "image": [None]}), params={"text_mode": "short"}))
        finally:
            mlflow.set_tracking_uri(previous_uri)
    model = FGCLIPModel.from_pretrained(tiny_checkpoint_dir).eval()
    with torch.no_grad():
        want = model.get_text_features(load_tokenizer(tiny_checkpoint_dir).encode(["a red square"], mode="short"))
    assert abs(got - torch.nn.functional.normalize(want, dim=-1).numpy()).max() < 1e-5

    bucket, prefix = destination.removeprefix("s3://").split("/", 1)
    s3 = boto3.client("s3", endpoint_url=moto_s3.endpoint)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
            for o in page.get("Contents", [])]
    names = {k.rsplit("/", 1)[-1] for k in keys}
    assert {"MLmodel", "model.safetensors", "config.json"} <= names, sorted(keys)

    with psycopg2.connect(postgres.url("mlflow", driver=None)) as conn, conn.cursor() as cur:
        cur.execute("SELECT version::text FROM model_versions WHERE name = %s", (NAME,))
        assert cur.fetchall() == [(v1.version,)]
        cur.execute("SELECT alias, version::text FROM registered_model_aliases WHERE name = %s ORDER BY alias", (NAME,))
        assert cur.fetchall() == [(CHALLENGER, v1.version), (CHAMPION, v1.version)]
