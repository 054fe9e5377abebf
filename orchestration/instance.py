"""The embedded Dagster instance: ``dagster.yaml`` under ``DAGSTER_HOME`` (default ``.fgclip/dagster_home``).

``prepare_dagster_home()`` (or ``python -m orchestration.instance``, ``make dagster-home``) writes it and sets
the pool limits, so ``dagster dev`` / ``dagster-daemon`` start without the "No dagster instance configuration
file" warning and with:

- storage (runs, event logs, schedules): SQLite in that folder (the default), or PostgreSQL with
  ``--storage postgres`` / ``FGCLIP_DAGSTER_STORAGE=postgres``: the file then says
  ``postgres_url: {env: DAGSTER_PG_URL}``, so the URL (and its password) stays in the environment of every
  Dagster process and never lands in the file (``infra/stack/postgres.py`` starts a local cluster);
- a run queue (``QueuedRunCoordinator``): at most ``max_concurrent_runs`` runs at once;
- run retries for runs whose worker crashed (asset failures are retried by the assets' own retry policies);
- concurrency pools at op granularity: ``training`` 1 (one training at a time), ``annotation_endpoint`` 2.
  Pool limits live in the instance's storage, not in dagster.yaml (the UI shows and edits them under
  Deployment -> Concurrency); this sets them each time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fgclip_core.redact import redact_uri
from orchestration import settings

DEFAULT_POOL_LIMITS = {"training": 1, "annotation_endpoint": 2}

PG_URL_ENV = "DAGSTER_PG_URL"

STORAGE_BLOCKS = {
    "sqlite": """\
storage:
  sqlite:
    base_dir: {home}
""",
    "postgres": f"""\
storage:
  postgres:
    postgres_url:
      env: {PG_URL_ENV}
""",
}
# one list of storage names: settings.dagster_storage() validates the variable against the same names
assert tuple(STORAGE_BLOCKS) == settings.DAGSTER_STORAGES, "orchestration.settings.DAGSTER_STORAGES is out of date"

TEMPLATE = """\
# Written by orchestration/instance.py (python -m orchestration.instance); edits are overwritten there.
{storage}run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: {dequeue_interval_s}
concurrency:
  runs:
    max_concurrent_runs: {max_concurrent_runs}
  pools:
    granularity: op
run_retries:
  enabled: true
  max_retries: {max_retries}
  retry_on_asset_or_op_failure: false
code_servers:
  local_startup_timeout: 300
telemetry:
  enabled: false
"""


def dagster_yaml(home: Path, max_concurrent_runs: int = 4, max_retries: int = 2, dequeue_interval_s: int = 5,
                 storage: str = "sqlite") -> str:
    if max_concurrent_runs < 1 or max_retries < 0 or dequeue_interval_s < 1:
        raise ValueError("max_concurrent_runs >= 1, max_retries >= 0 and dequeue_interval_s >= 1 are needed")
    if storage not in STORAGE_BLOCKS:
        raise ValueError(f"storage {storage!r}: expected one of {', '.join(STORAGE_BLOCKS)}")
    block = STORAGE_BLOCKS[storage].format(home=json.dumps(str(home)))
    return TEMPLATE.format(storage=block, max_concurrent_runs=max_concurrent_runs, max_retries=max_retries,
                           dequeue_interval_s=dequeue_interval_s)


def prepare_dagster_home(home: str | Path | None = None, *, pool_limits: dict[str, int] | None = None,
                         storage: str | None = None, **yaml_settings: int) -> Path:
    """Write ``<home>/dagster.yaml`` (when its content changed) and set the pool limits; returns home.

    ``storage``: ``sqlite`` or ``postgres`` (default: ``settings.dagster_storage()``); ``postgres`` needs
    ``$DAGSTER_PG_URL`` set here too, since the pool limits are written into that storage."""
    from dagster import DagsterInstance

    storage = storage or settings.dagster_storage()
    if storage == "postgres" and not os.environ.get(PG_URL_ENV, "").strip():
        raise ValueError(f"{PG_URL_ENV} is not set: Postgres storage reads its URL from it "
                         "(python -m infra.stack.postgres url --dir DIR --db dagster prints one)")
    root = Path(home).resolve() if home is not None else settings.dagster_home()
    root.mkdir(parents=True, exist_ok=True)
    text = dagster_yaml(root, storage=storage, **yaml_settings)
    target = root / "dagster.yaml"
    if not (target.is_file() and target.read_text() == text):
        tmp = target.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        tmp.replace(target)
    try:
        with DagsterInstance.from_config(str(root)) as instance:
            for pool, limit in (pool_limits if pool_limits is not None else DEFAULT_POOL_LIMITS).items():
                instance.event_log_storage.set_concurrency_slots(pool, limit)
    except Exception as e:
        if storage != "postgres" or not type(e).__module__.startswith(("dagster_postgres", "sqlalchemy", "psycopg2")):
            raise
        raise StorageUnavailable(f"Dagster storage at {redact_uri(os.environ[PG_URL_ENV])} ({PG_URL_ENV}) not usable: "
                                 f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from e
    return root


class StorageUnavailable(RuntimeError):
    """The Postgres storage named by ``$DAGSTER_PG_URL`` cannot be reached or used."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestration.instance", description=__doc__.split("\n")[0])
    p.add_argument("--home", help="default: $DAGSTER_HOME or <FGCLIP_HOME>/dagster_home")
    p.add_argument("--max-concurrent-runs", type=int, default=4)
    p.add_argument("--max-retries", type=int, default=2)
    p.add_argument("--dequeue-interval", type=int, default=5, help="seconds between looks at the run queue")
    p.add_argument("--storage", choices=list(STORAGE_BLOCKS),
                   help=f"default: $FGCLIP_DAGSTER_STORAGE or sqlite; postgres reads ${PG_URL_ENV}")
    args = p.parse_args(argv)
    try:
        storage = args.storage or settings.dagster_storage()
        root = prepare_dagster_home(args.home, max_concurrent_runs=args.max_concurrent_runs, storage=storage,
                                    max_retries=args.max_retries, dequeue_interval_s=args.dequeue_interval)
    except (ValueError, StorageUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"DAGSTER_HOME={root} (dagster.yaml written; storage: {storage}; pools: "
          + ", ".join(f"{k}={v}" for k, v in DEFAULT_POOL_LIMITS.items()) + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
