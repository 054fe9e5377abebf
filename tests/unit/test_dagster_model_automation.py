"""The retrain schedule and the declarative automation of the model side request what they should."""

import datetime as dt

from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    RunRequest,
    SkipReason,
    build_schedule_context,
    evaluate_automation_conditions,
    instance_for_test,
    materialize,
)

from assets.evaluation import eval_benchmarks, evaluation
from assets.registry import registered_model
from assets.training import base_checkpoint, trained_model
from orchestration.definitions import make_resources
from orchestration.model_jobs import retrain_schedule
from orchestration.refs import RefIOManager
from tests.dagster_standins import fake_shards_asset

MODEL = [base_checkpoint, trained_model, eval_benchmarks, evaluation, registered_model]
RETRAIN = {AssetKey("trained_model"), AssetKey("evaluation"), AssetKey("registered_model")}


def _land(instance, shards, tmp_path, batch):
    instance.add_dynamic_partitions("image_batches", [batch])
    res = materialize([shards], partition_key=batch, instance=instance,
                      resources={"ref_io_manager": RefIOManager(base_url=str(tmp_path))})
    assert res.success


def test_schedule_skips_without_shards_and_requests_retrain_with_them(tmp_path):
    with instance_for_test() as instance:
        _schedule_ticks(instance, tmp_path)


def _schedule_ticks(instance, tmp_path):
    assert retrain_schedule.job_name == "retrain"
    when = dt.datetime(2031, 1, 2, 3, 0, tzinfo=dt.UTC)
    got = retrain_schedule(build_schedule_context(instance=instance, scheduled_execution_time=when))
    assert isinstance(got, SkipReason) and "no training_shards" in got.skip_message
    shards = fake_shards_asset()
    _land(instance, shards, tmp_path, "batch-a")
    _land(instance, shards, tmp_path, "batch-b")
    got = retrain_schedule(build_schedule_context(instance=instance, scheduled_execution_time=when))
    assert isinstance(got, RunRequest)
    assert got.run_key == "retrain-2031-01-02T03:00" and got.tags["fgclip.partitions"] == "batch-a,batch-b"


def _requested(result) -> set[AssetKey]:
    return {k for k in RETRAIN if result.get_requested_partitions(k)}


def test_trained_model_retrains_on_the_cron_only_when_new_shards_landed(tmp_path):
    instance = DagsterInstance.ephemeral()
    shards = fake_shards_asset()
    defs = Definitions(assets=[shards, *MODEL], resources=make_resources(data_url=str(tmp_path)))
    day = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=2)

    def tick(at, cursor):
        return evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=None,
                                              evaluation_time=at, cursor=cursor)

    r = tick(day.replace(hour=2), None)
    assert _requested(r) == set()
    _land(instance, shards, tmp_path, "batch-a")
    r = tick(day.replace(hour=2, minute=30), r.cursor)         # new shards, but no cron tick yet
    assert _requested(r) == set()
    r = tick(day.replace(hour=3, minute=1), r.cursor)          # the 03:00 tick passed: retrain, evaluate, register
    assert _requested(r) == RETRAIN
    r = tick(day.replace(hour=3, minute=5), r.cursor)          # handled: not again
    assert _requested(r) == set()
    r = tick(day.replace(hour=3, minute=1) + dt.timedelta(days=1), r.cursor)   # a tick without new shards
    assert _requested(r) == set()
    _land(instance, shards, tmp_path, "batch-b")
    r = tick(day.replace(hour=12) + dt.timedelta(days=1), r.cursor)   # new shards wait for the next tick
    assert _requested(r) == set()
    r = tick(day.replace(hour=3, minute=2) + dt.timedelta(days=2), r.cursor)
    assert _requested(r) == RETRAIN
