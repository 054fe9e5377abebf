"""Dagster instance on PostgreSQL (opt-in): dagster.yaml names the URL only through ``DAGSTER_PG_URL``; a real
materialisation lands its run and event in Postgres, nothing in SQLite, and the pool limits live there too."""

from __future__ import annotations

import psycopg2
import pytest
from dagster import DagsterInstance, MaterializeResult, asset, materialize

from orchestration.instance import DEFAULT_POOL_LIMITS, PG_URL_ENV, prepare_dagster_home

pytestmark = pytest.mark.integration

SQLITE_MAGIC = b"SQLite format 3\x00"


@asset
def pg_probe() -> MaterializeResult:
    return MaterializeResult(metadata={"rows": 3})


def test_materialisation_and_pools_live_in_postgres(postgres, tmp_path, monkeypatch):
    monkeypatch.setenv(PG_URL_ENV, postgres.url("dagster"))
    home = prepare_dagster_home(tmp_path / "home", storage="postgres")
    text = (home / "dagster.yaml").read_text()
    assert f"env: {PG_URL_ENV}" in text and postgres.password() not in text and "sqlite" not in text

    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = materialize([pg_probe], instance=instance)
        assert result.success
        for pool, limit in DEFAULT_POOL_LIMITS.items():
            assert instance.event_log_storage.get_concurrency_info(pool).slot_count == limit

    with psycopg2.connect(postgres.url("dagster", driver=None)) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchall() == [("SUCCESS",)]
        cur.execute("SELECT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
                    (result.run_id, "ASSET_MATERIALIZATION"))
        assert cur.fetchall() == [('["pg_probe"]',)]
        cur.execute('SELECT concurrency_key, "limit" FROM concurrency_limits')
        assert dict(cur.fetchall()) == DEFAULT_POOL_LIMITS

    sqlite_files = [p for p in home.rglob("*") if p.is_file() and p.open("rb").read(16) == SQLITE_MAGIC]
    assert sqlite_files == [], f"SQLite files in a Postgres-backed DAGSTER_HOME: {sqlite_files}"


def test_postgres_storage_without_its_url_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from orchestration.instance import main

    monkeypatch.delenv(PG_URL_ENV, raising=False)
    assert main(["--home", str(tmp_path / "home"), "--storage", "postgres"]) == 1
    assert f"{PG_URL_ENV} is not set" in capsys.readouterr().err
    assert not (tmp_path / "home" / "dagster.yaml").exists()
