"""The raw-source sensor: a partition and an annotate_batch run per new batch, idempotent over ticks."""

import json

import pytest
from dagster import DagsterInstance, SkipReason, build_sensor_context

from fgclip_core.sample.batches import land_sample_batch
from orchestration.data_resources import RawSourceResource
from orchestration.sensors import plan_tick, raw_batches_sensor


@pytest.fixture()
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


def _tick(instance, source, cursor=None):
    ctx = build_sensor_context(instance=instance, cursor=cursor, resources={"raw_source": source})
    return raw_batches_sensor(ctx)


def _added(result):
    return [k for req in result.dynamic_partitions_requests for k in req.partition_keys]


def test_ticks_add_each_new_batch_once_and_request_its_run(tmp_path, instance):
    raw = tmp_path / "raw"
    land_sample_batch(str(raw), 1)
    source = RawSourceResource(url=str(raw))

    first = _tick(instance, source)
    assert _added(first) == ["batch-0001"]
    assert [(r.partition_key, r.job_name) for r in first.run_requests] == [("batch-0001", None)]
    assert first.run_requests[0].run_key.startswith("batch-0001:")

    second = _tick(instance, source, first.cursor)  # the same source again: nothing new
    assert isinstance(second, SkipReason)

    land_sample_batch(str(raw), 2)
    (raw / ".batch-0003.landing").mkdir()  # still landing: not a batch yet
    third = _tick(instance, source, first.cursor)
    assert _added(third) == ["batch-0002"]
    assert [r.partition_key for r in third.run_requests] == ["batch-0002"]
    assert set(json.loads(third.cursor)) == {"batch-0001", "batch-0002"}
    assert isinstance(_tick(instance, source, third.cursor), SkipReason)


def test_a_partition_known_to_the_instance_is_not_added_again(tmp_path, instance):
    raw = tmp_path / "raw"
    land_sample_batch(str(raw), 1)
    instance.add_dynamic_partitions("image_batches", ["batch-0001"])
    result = _tick(instance, RawSourceResource(url=str(raw)))  # no cursor (e.g. a fresh sensor)
    assert not _added(result) and not result.run_requests
    assert set(json.loads(result.cursor)) == {"batch-0001"}


def test_a_changed_batch_is_run_again_under_a_new_run_key(tmp_path, instance):
    raw = tmp_path / "raw"
    land_sample_batch(str(raw), 1)
    source = RawSourceResource(url=str(raw))
    first = _tick(instance, source)
    (raw / "batch-0001" / "extra.png").write_bytes((raw / "batch-0001" / "coins.png").read_bytes())
    again = _tick(instance, source, first.cursor)
    assert not _added(again)
    assert [r.partition_key for r in again.run_requests] == ["batch-0001"]
    assert again.run_requests[0].run_key != first.run_requests[0].run_key


def test_plan_tick_is_pure():
    new, run, cursor = plan_tick({"a": "1", "b": "2"}, {"b"}, json.dumps({"b": "2"}))
    assert (new, run) == (["a"], ["a"])
    assert json.loads(cursor) == {"a": "1", "b": "2"}
    assert plan_tick({}, set(), None)[:2] == ([], [])


def test_the_default_source_is_the_sample_first_batch(tmp_path, monkeypatch, instance):
    monkeypatch.setenv("FGCLIP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FGCLIP_RAW_URL", raising=False)
    source = RawSourceResource()
    assert source.uses_sample()
    result = _tick(instance, source)
    assert _added(result) == ["batch-0001"]
    assert sorted(p.name for p in (tmp_path / "home" / "raw" / "incoming" / "batch-0001").iterdir())[:2] == [
        "astronaut.png", "chelsea.png"]
