"""The embedded Dagster instance: ``dagster.yaml`` under ``DAGSTER_HOME`` (default ``.fgclip/dagster_home``).

``prepare_dagster_home()`` (or ``python -m orchestration.instance``, ``make dagster-home``) writes it and sets
the pool limits, so ``dagster dev`` / ``dagster-daemon`` start without the "No dagster instance configuration
file" warning and with:

- SQLite storage in that folder (runs, event logs, schedules);
- a run queue (``QueuedRunCoordinator``): at most ``max_concurrent_runs`` runs at once;
- run retries for runs whose worker crashed (asset failures are retried by the assets' own retry policies);
- concurrency pools at op granularity: ``training`` 1 (one training at a time), ``annotation_endpoint`` 2.
  Pool limits live in the instance's storage, not in dagster.yaml (the UI shows and edits them under
  Deployment -> Concurrency); this sets them each time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orchestration import settings

DEFAULT_POOL_LIMITS = {"training": 1, "annotation_endpoint": 2}

TEMPLATE = """\
# Written by orchestration/instance.py (python -m orchestration.instance); edits are overwritten there.
storage:
  sqlite:
    base_dir: {home}
run_coordinator:
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


def dagster_yaml(home: Path, max_concurrent_runs: int = 4, max_retries: int = 2, dequeue_interval_s: int = 5) -> str:
    if max_concurrent_runs < 1 or max_retries < 0 or dequeue_interval_s < 1:
        raise ValueError("max_concurrent_runs >= 1, max_retries >= 0 and dequeue_interval_s >= 1 are needed")
    return TEMPLATE.format(home=json.dumps(str(home)), max_concurrent_runs=max_concurrent_runs, max_retries=max_retries,
                           dequeue_interval_s=dequeue_interval_s)


def prepare_dagster_home(home: str | Path | None = None, *, pool_limits: dict[str, int] | None = None,
                         **yaml_settings: int) -> Path:
    """Write ``<home>/dagster.yaml`` (when its content changed) and set the pool limits; returns home."""
    from dagster import DagsterInstance

    root = Path(home).resolve() if home is not None else settings.dagster_home()
    root.mkdir(parents=True, exist_ok=True)
    text = dagster_yaml(root, **yaml_settings)
    target = root / "dagster.yaml"
    if not (target.is_file() and target.read_text() == text):
        tmp = target.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        tmp.replace(target)
    with DagsterInstance.from_config(str(root)) as instance:
        for pool, limit in (pool_limits if pool_limits is not None else DEFAULT_POOL_LIMITS).items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestration.instance", description=__doc__.split("\n")[0])
    p.add_argument("--home", help="default: $DAGSTER_HOME or <FGCLIP_HOME>/dagster_home")
    p.add_argument("--max-concurrent-runs", type=int, default=4)
    p.add_argument("--max-retries", type=int, default=2)
    p.add_argument("--dequeue-interval", type=int, default=5, help="seconds between looks at the run queue")
    args = p.parse_args(argv)
    root = prepare_dagster_home(args.home, max_concurrent_runs=args.max_concurrent_runs,
                                max_retries=args.max_retries, dequeue_interval_s=args.dequeue_interval)
    print(f"DAGSTER_HOME={root} (dagster.yaml written; pools: "
          + ", ".join(f"{k}={v}" for k, v in DEFAULT_POOL_LIMITS.items()) + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
