"""The embedded dagster.yaml: the instance it makes has the run queue, run retries, pools and SQLite storage."""

from dagster import DagsterInstance

from orchestration.instance import DEFAULT_POOL_LIMITS, dagster_yaml, main, prepare_dagster_home


def test_the_instance_gets_queue_retries_pools_and_sqlite(tmp_path):
    home = prepare_dagster_home(tmp_path / "home", max_concurrent_runs=3, max_retries=1)
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 3
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure  # assets retry through their own policies
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        for pool, limit in DEFAULT_POOL_LIMITS.items():
            assert instance.event_log_storage.get_concurrency_info(pool).slot_count == limit
    assert DEFAULT_POOL_LIMITS["training"] == 1
    assert (home / "history").is_dir()  # the SQLite stores live in the home folder


def test_rewriting_is_idempotent_and_the_cli_uses_the_default_home(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FGCLIP_HOME", str(tmp_path / "fg"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main([]) == 0
    target = tmp_path / "fg" / "dagster_home" / "dagster.yaml"
    assert target.read_text() == dagster_yaml(target.parent)
    mtime = target.stat().st_mtime_ns
    prepare_dagster_home(target.parent)
    assert target.stat().st_mtime_ns == mtime
    assert "DAGSTER_HOME=" in capsys.readouterr().out


def test_postgres_storage_is_opt_in_and_names_the_url_only_by_its_variable(tmp_path, monkeypatch):
    import pytest

    from fgclip_core.safe_yaml import load_yaml
    from orchestration import settings

    monkeypatch.delenv("FGCLIP_DAGSTER_STORAGE", raising=False)
    assert settings.dagster_storage() == "sqlite"
    assert "sqlite" in load_yaml(dagster_yaml(tmp_path), "dagster.yaml")["storage"]
    monkeypatch.setenv("FGCLIP_DAGSTER_STORAGE", "Postgres")
    assert settings.dagster_storage() == "postgres"
    doc = load_yaml(dagster_yaml(tmp_path, storage=settings.dagster_storage()), "dagster.yaml")
    assert doc["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
    assert doc["concurrency"]["runs"]["max_concurrent_runs"] == 4  # the rest of the instance is unchanged
    monkeypatch.setenv("FGCLIP_DAGSTER_STORAGE", "mysql")
    with pytest.raises(ValueError, match="FGCLIP_DAGSTER_STORAGE='mysql'"):
        settings.dagster_storage()
