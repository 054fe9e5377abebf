"""`make demo`: the whole graph through Dagster on the embedded defaults, then what happened.

Everything is recorded in the Dagster instance under ``DAGSTER_HOME`` (default ``.fgclip/dagster_home``,
SQLite), MLflow in ``sqlite:///.fgclip/mlflow.db``, files under ``.fgclip/data``, so ``make ui`` shows
the same runs, partitions and model versions afterwards.

Each run of the demo lands the next sample batch into the raw source (the first run: batch 1; the
second: batch 2), ticks the raw-source sensor in-process (it adds a partition per new batch and
requests ``annotate_batch`` runs for exactly those), runs them, then trains on the shards of every
batch, evaluates, registers a new version of ``fgclip`` (alias ``challenger``) and applies the
promotion gates. When every sample batch has landed, a run says so and changes nothing.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from fgclip_core.storage import filesystem

# Dagster's console log at INFO (the step debug events stay in the instance, visible in the UI)
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _say(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def _sensor_tick(instance, defs, cursor_file: Path) -> tuple[list[str], list]:
    """One evaluation of the raw-source sensor, applied like the daemon would: partitions added, run
    requests returned, cursor kept in DAGSTER_HOME."""
    from dagster import SensorResult, SkipReason, build_sensor_context

    from orchestration.partitions import image_batches

    sensor = defs.resolve_sensor_def("raw_batches_sensor")
    cursor = cursor_file.read_text() if cursor_file.is_file() else None
    with build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                              resources=dict(defs.resources)) as ctx:
        result = sensor(ctx)
    if isinstance(result, SkipReason) or result is None:
        print(f"sensor: {getattr(result, 'skip_message', 'nothing to do')}")
        return [], []
    assert isinstance(result, SensorResult)
    added = [k for req in result.dynamic_partitions_requests or [] for k in req.partition_keys]
    if added:
        instance.add_dynamic_partitions(image_batches.name, added)
    if result.cursor is not None:
        cursor_file.write_text(result.cursor)
    print(f"sensor: added partition(s) {added or '-'}; runs requested for "
          f"{[r.partition_key for r in result.run_requests or []] or '-'}")
    return added, list(result.run_requests or [])


def _counts(store, asset: str, partition: str | None) -> dict:
    from dagster import AssetKey

    try:
        return dict(store.load(AssetKey(asset), partition).counts)
    except FileNotFoundError:
        return {}


def _land_next_batch(raw: str) -> str | None:
    from fgclip_core.sample.batches import SAMPLE_BATCHES, land_sample_batch, sample_batch_name

    fs, base = filesystem(raw)
    for index in range(1, SAMPLE_BATCHES + 1):
        if not fs.exists(f"{base.rstrip('/')}/{sample_batch_name(index)}"):
            return land_sample_batch(raw, index)
    return None


def run(steps: int, nproc: int) -> int:
    from orchestration import settings

    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home()))
    from dagster import AssetKey, DagsterInstance, materialize

    from orchestration.definitions import ALL_ASSETS, defs
    from orchestration.instance import prepare_dagster_home
    from orchestration.model_resources import TrainingResource
    from orchestration.refs import RefIOManager

    t0 = time.perf_counter()
    home = prepare_dagster_home()
    raw, data = settings.raw_url(), settings.data_url()
    print(f"DAGSTER_HOME {home}\nraw source   {raw}\ndata         {data}\nMLflow       {settings.mlflow_tracking_uri()}")
    instance = DagsterInstance.get()

    _say("1. a batch of images lands in the raw source")
    landed = _land_next_batch(raw)
    if landed is None:
        print("every sample batch has landed already: nothing new (start over with `rm -rf .fgclip`)")
    else:
        print(f"landed {landed}")

    _say("2. sensor tick: one partition per new batch, annotate_batch for exactly those")
    _, requests = _sensor_tick(instance, defs, home / "raw_batches_sensor.cursor")
    job = defs.resolve_job_def("annotate_batch")
    for req in requests:
        res = job.execute_in_process(partition_key=req.partition_key, instance=instance, tags=dict(req.tags),
                                     run_config=QUIET, raise_on_error=False)
        print(f"annotate_batch[{req.partition_key}]: {'ok' if res.success else 'FAILED'} (run {res.run_id[:8]})")
        if not res.success:
            return 1
    store = RefIOManager(base_url=data)
    partitions = sorted(instance.get_dynamic_partitions("image_batches"))
    for p in partitions:
        print(f"  {p}: raw {_counts(store, 'raw_images', p)}; validated {_counts(store, 'validated_records', p)};"
              f" shards {_counts(store, 'training_shards', p)}")
    if not requests:
        print("no new batch: the model side is left as it is")
        return _report(instance, store, partitions, t0, trained=False)

    _say(f"3. train on every batch ({steps} steps, {nproc} process(es)), evaluate, register, gate")
    selection = [AssetKey(k) for k in ("trained_model", "evaluation", "registered_model")]
    for k in ("base_checkpoint", "eval_benchmarks"):
        if instance.get_latest_materialization_event(AssetKey(k)) is None:
            selection.append(AssetKey(k))
    resources = {**defs.resources, "training": TrainingResource(max_steps=steps, nproc=nproc)}
    checks = list(defs.asset_checks or [])
    res = materialize([*ALL_ASSETS, *checks], selection=selection, instance=instance, resources=resources,
                      raise_on_error=False, tags={"fgclip.trigger": "make demo"}, run_config=QUIET)
    if not res.success:
        for e in res.all_events:
            if e.is_failure:
                print(f"FAILED: {e.message}", file=sys.stderr)
        return 1
    return _report(instance, store, partitions, t0, trained=True, result=res)


def _meta(result, name: str) -> dict:
    (mat,) = result.asset_materializations_for_node(name)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _report(instance, store, partitions, t0: float, trained: bool, result=None) -> int:
    from mlflow import MlflowClient

    from fgclip_core.redact import redact_text
    from orchestration import settings

    _say("what happened")
    print(f"partitions: {', '.join(partitions) or '-'}")
    if trained and result is not None:
        t, ev, reg = _meta(result, "trained_model"), _meta(result, "evaluation"), _meta(result, "registered_model")
        print(f"training: {t['steps']} steps on {t['samples_in_shards']} samples of {t['partitions']}, "
              f"final loss {t['final_loss']:.4f}, {t['samples_per_s']:.1f} samples/s")
        print(f"shard manifests: {t['shard_manifests']}")
        from dagster import AssetKey

        metrics = store.load(AssetKey("evaluation")).metrics
        print(f"evaluation on benchmark set {ev['benchmarks_sha256'][:12]} (champion compared: "
              f"{ev['champion_version'] or 'none yet'}); report {ev['report']}")
        print("metrics: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in sorted(metrics.items())
                                       if k.endswith(("accuracy", "i2t_R@1", "top1"))))
        print(f"\nregistered {reg['model_name']} v{reg['version']} as @{reg['alias']}: {reg['decision']}\n")
        print(reg["gates"])
    uri = settings.mlflow_tracking_uri()
    client = MlflowClient(uri)
    aliases = {}
    for alias in ("challenger", "champion"):
        try:
            aliases[alias] = int(client.get_model_version_by_alias("fgclip", alias).version)  # str over REST
        except Exception:  # no such alias yet
            aliases[alias] = "-"
    print(f"\naliases: @challenger v{aliases['challenger']}, @champion v{aliases['champion']}")
    again = "run `make demo` again to land the next batch" if trained else "`rm -rf .fgclip` to start over"
    mlflow_ui = redact_text(uri) if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    print(f"done in {time.perf_counter() - t0:.0f} s. Look: `make ui` (Dagster http://127.0.0.1:3000, "
          f"MLflow {mlflow_ui}); {again}.")
    print(json.dumps({"partitions": partitions, "aliases": aliases}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestration.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=int(os.environ.get("FGCLIP_DEMO_STEPS", "10")),
                    help="optimizer steps of the tiny training run")
    ap.add_argument("--nproc", type=int, default=int(os.environ.get("FGCLIP_DEMO_NPROC", "1")),
                    help="local training processes (gloo on CPU)")
    args = ap.parse_args(argv)
    return run(args.steps, args.nproc)


if __name__ == "__main__":
    raise SystemExit(main())
