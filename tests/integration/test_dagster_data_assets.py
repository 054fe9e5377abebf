"""The per-batch data assets materialised in-process on the sample batches (ephemeral instance; about a
minute on 2 cores: every stage decodes the real photos)."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, materialize

from fgclip_core.sample.batches import land_sample_batch
from orchestration.checks import DATA_CHECKS
from orchestration.data_resources import AnnotationResource, DataStoreResource, RawSourceResource
from orchestration.definitions import DATA_ASSETS, data_resources
from orchestration.refs import RecordsRef, ShardSetRef, ref_from_json

pytestmark = pytest.mark.integration
NAMES = [a.key.path[-1] for a in DATA_ASSETS]
FAST = {"ops": {"training_shards": {"config": {"store_token_ids": False}}}}


def _meta(result, name: str) -> dict:
    (mat,) = result.asset_materializations_for_node(name)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _ref(data: Path, asset: str, batch: str):
    return ref_from_json((data / "refs" / asset / f"{batch}.json").read_text(), asset)


def _run(instance, raw: Path, data: Path, batch: str, *, keep: int = 3, annotation=None, run_config=None):
    resources = data_resources(RawSourceResource(url=str(raw)), DataStoreResource(base_url=str(data),
                               keep_versions=keep), annotation)
    return materialize([*DATA_ASSETS, *DATA_CHECKS], partition_key=batch, instance=instance, resources=resources,
                       run_config=FAST if run_config is None else run_config, raise_on_error=False)


@pytest.fixture(scope="module")
def two_batches(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    raw, data = root / "raw", root / "data"
    land_sample_batch(str(raw), 1)
    land_sample_batch(str(raw), 2)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("image_batches", ["batch-0001", "batch-0002"])
    results = {b: _run(instance, raw, data, b, run_config={}) if b == "batch-0001" else _run(instance, raw, data, b)
               for b in ("batch-0001", "batch-0002")}
    yield instance, raw, data, results
    instance.dispose()


def test_every_stage_materialises_each_batch_with_counts_and_a_preview(two_batches):
    _, _, data, results = two_batches
    for batch, images in (("batch-0001", 7), ("batch-0002", 6)):
        result = results[batch]
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
            "quarantine_ratio_below_threshold": True, "shards_manifest_verifies": True}
        assert _meta(result, "raw_images")["images"] == images
        for name in NAMES[1:5]:
            m = _meta(result, name)
            assert (m["in"], m["out"], m["quarantined"]) == (images, images, 0), name
            assert "data:image/png;base64," in m["preview"], name
        assert _meta(result, "region_boxes")["regions"] > 0
        assert "hard negatives" in _meta(result, "hard_negatives")["preview"]
        shards = _meta(result, "training_shards")
        assert (shards["in"], shards["out"], shards["quarantined"], shards["quarantined_by_reason"]) == (
            images, images, 0, {})
        ref = _ref(data, "training_shards", batch)
        assert isinstance(ref, ShardSetRef) and ref.partition == batch and ref.samples == images
        assert ref.sha256 == shards["manifest_sha256"] and Path(ref.manifest_uri).is_file()
        assert Path(ref.uri).parent == data / "training_shards" / batch
        assert _meta(result, "training_shards")["token_ids_stored"] is (batch == "batch-0001")
        for name in NAMES[:5]:
            r = _ref(data, name, batch)
            assert isinstance(r, RecordsRef) and Path(r.uri).is_dir() and Path(r.uri).parent.name == batch


def test_rematerialising_a_batch_replaces_only_that_batch(two_batches):
    instance, raw, data, _ = two_batches
    before = {(a, b): (data / "refs" / a / f"{b}.json").read_bytes() for a in NAMES for b in ("batch-0001", "batch-0002")}
    old_uris = {a: _ref(data, a, "batch-0001").uri for a in NAMES}
    result = _run(instance, raw, data, "batch-0001", keep=1)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    for a in NAMES:
        assert (data / "refs" / a / "batch-0002.json").read_bytes() == before[(a, "batch-0002")], a
        new = _ref(data, a, "batch-0001")
        assert new.uri != old_uris[a] and Path(new.uri).is_dir(), a
        assert not Path(old_uris[a]).exists(), f"{a}: keep_versions=1 keeps only the newest"
        assert [p.name for p in (data / a / "batch-0001").iterdir()] == [Path(new.uri).name]
        assert len(list((data / a / "batch-0002").iterdir())) == 1
    # the same images: the copy's content hash does not depend on where or when it was written
    old_raw = ref_from_json(before[("raw_images", "batch-0001")].decode(), "raw_images")
    assert _ref(data, "raw_images", "batch-0001").sha256 == old_raw.sha256


def _bad_batch(raw: Path, good: Path, broken: int) -> None:
    """The good batch's images plus ``broken`` undecodable files; one metadata line that is not JSON, and
    one image whose labelled regions are malformed."""
    dest = raw / "bad"
    shutil.copytree(good, dest)
    for i in range(broken):
        (dest / f"broken-{i}.jpg").write_bytes(b"\xff\xd8 truncated " + bytes([i]))
    meta = dest / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    row = json.loads(lines[0])
    row["regions"] = [{"bbox": "not a box", "phrase": "x"}]
    meta.write_text("\n".join([json.dumps(row), *lines[1:], "{not json", ""]))


def test_a_bad_batch_is_quarantined_and_the_gate_fails_only_above_the_ratio(two_batches, tmp_path):
    instance, raw0, _, _ = two_batches
    raw, data = tmp_path / "raw", tmp_path / "data"
    _bad_batch(raw, raw0 / "batch-0002", broken=2)  # 2 + 1 of 8 images lost: 0.375
    instance.add_dynamic_partitions("image_batches", ["bad"])
    result = _run(instance, raw, data, "bad")
    m = _meta(result, "raw_images")
    assert (m["images"], m["metadata_rows"], m["metadata_rows_rejected"]) == (8, 6, 1)
    assert "not JSON" in m["preview"]
    m = _meta(result, "long_captions")
    assert (m["in"], m["out"], m["quarantined"], m["quarantined_by_reason"]) == (8, 6, 2, {"decode": 2})
    assert "broken-0.jpg" in m["preview"]
    m = _meta(result, "region_boxes")
    assert (m["in"], m["out"], m["quarantined"], m["quarantined_by_reason"]) == (6, 5, 1, {"boxes": 1})
    assert _meta(result, "validated_records")["batch_quarantine_ratio"] == pytest.approx(3 / 8)
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "quarantine_ratio_below_threshold"]
    assert not check.passed and check.metadata["quarantined"].value == 3
    assert not result.asset_materializations_for_node("training_shards")  # the blocking gate stopped it

    looser = {**FAST, "ops": {**FAST["ops"], "validated_records_quarantine_ratio_below_threshold": {
        "config": {"max_quarantine_ratio": 0.4}}}}
    again = _run(instance, raw, data, "bad", run_config=looser)
    assert again.success, [e.message for e in again.all_events if e.is_failure]
    assert _meta(again, "training_shards")["samples"] == 5


def test_an_unreachable_caption_endpoint_is_retried_then_fails_naming_it(two_batches, tmp_path):
    instance, raw, _, _ = two_batches
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    annotation = AnnotationResource(captions_backend="openai", overrides=[
        f"endpoint.base_url={url}", "endpoint.max_retries=0", "endpoint.connect_timeout_s=1"])
    result = _run(instance, raw, tmp_path / "data", "batch-0002", annotation=annotation)
    assert not result.success
    retries = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == 2 and {e.step_key for e in retries} == {"long_captions"}
    (failure,) = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "long_captions"
    message = failure.step_failure_data.user_failure_data.description
    assert f"caption endpoint {url}" in message and "after 3 attempts" in message
    assert not result.asset_materializations_for_node("long_captions")
    failed = tmp_path / "data" / "long_captions" / "batch-0002"
    assert not (failed.exists() and list(failed.iterdir())), "a failed attempt left a version folder"
