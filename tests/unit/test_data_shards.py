"""Shards: layout, manifest, idempotent bytes, plain webdataset compatibility, atomic writes."""

from __future__ import annotations

import hashlib
import json
import tarfile

import pytest
import webdataset as wds

from fgclip_core.data.atomic import atomic_open
from fgclip_core.data.config import DataConfig, ShardConfig
from fgclip_core.data.pipeline import NothingUsableError, build_shards
from fgclip_core.data.shards import ManifestError, read_manifest, shard_urls, verify_shards
from tests.fixtures.data import image_bytes, make_record, write_images, write_jsonl


@pytest.fixture
def small_set(tmp_path):
    img = tmp_path / "images"
    names = write_images(img, 7)
    png = img / "extra.png"
    png.write_bytes(image_bytes(40, 30, mode="P", fmt="PNG"))
    records = [make_record(n.split(".")[0], n, boxes=1 + i % 3) for i, n in enumerate(names)]
    records.append(make_record("extra", "extra.png"))
    records.append(make_record("gone", "gone.jpg"))  # quarantined: image_missing
    return write_jsonl(tmp_path / "ann.jsonl", records), img


def _cfg(n: int) -> DataConfig:
    return DataConfig(shards=ShardConfig(samples_per_shard=n))


def test_build_layout_and_manifest(small_set, tmp_path):
    ann, img = small_set
    out = tmp_path / "shards"
    res = build_shards(str(ann), str(img), str(out), _cfg(3))
    names = sorted(p.name for p in out.iterdir())
    m = read_manifest(str(out))
    # content-addressed names: index, then the start of the shard's own sha256
    assert names == ["manifest.json", "quarantine.jsonl"] + [f"shard-{i:06d}-{s.sha256[:16]}.tar"
                                                             for i, s in enumerate(m.shards)]
    assert [s.count for s in m.shards] == [3, 3, 2] and m.total_samples == 8 and m.num_shards == 3
    for s in m.shards:
        data = (out / s.name).read_bytes()
        assert s.bytes == len(data) and s.sha256 == hashlib.sha256(data).hexdigest()
    assert m.summary["quarantined_by_reason"] == {"image_missing": 1} and res.summary.total == 9
    with tarfile.open(out / m.shards[0].name) as t:
        members = t.getmembers()
        assert [x.name for x in members] == ["img000.jpg", "img000.json", "img001.jpg", "img001.json",
                                             "img002.jpg", "img002.json"]
        assert all(x.mtime == 0 and x.uid == 0 and x.uname == "" for x in members)
    assert verify_shards(str(out)) == []
    q = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [e["reason"] for e in q] == ["image_missing"]


def test_rerun_is_idempotent_and_drops_stale_shards(small_set, tmp_path):
    ann, img = small_set
    out = tmp_path / "shards"
    build_shards(str(ann), str(img), str(out), _cfg(2))
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    build_shards(str(ann), str(img), str(out), _cfg(2), overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    build_shards(str(ann), str(img), str(out), _cfg(8), overwrite=True)  # other shards now: the old ones removed
    assert sorted(p.name for p in out.glob("shard-*.tar")) == [read_manifest(str(out)).shards[0].name]


def test_plain_webdataset_reads_the_shards(small_set, tmp_path):
    ann, img = small_set
    out = tmp_path / "shards"
    build_shards(str(ann), str(img), str(out), _cfg(3))
    ds = wds.WebDataset(shard_urls(str(out)), shardshuffle=False).decode("pil")
    samples = list(ds)
    assert [s["__key__"] for s in samples] == [f"img{i:03d}" for i in range(7)] + ["extra"]
    assert all(s["jpg"].mode == "RGB" for s in samples)
    assert samples[-1]["jpg"].size == (40, 30)
    rec = samples[1]["json"]
    assert rec["id"] == "img001" and len(rec["bbox_info"]) == 2 and len(rec["bbox_info"][0]["short_expr_negs"]) == 10


def test_manifest_tampering_is_detected(small_set, tmp_path):
    ann, img = small_set
    out = tmp_path / "shards"
    build_shards(str(ann), str(img), str(out), _cfg(3))
    data = json.loads((out / "manifest.json").read_text())
    data["shards"][0]["count"] = 99
    (out / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="does not match"):
        read_manifest(str(out))
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(str(tmp_path))


def test_shard_bytes_changed_are_reported(small_set, tmp_path):
    ann, img = small_set
    out = tmp_path / "shards"
    build_shards(str(ann), str(img), str(out), _cfg(3))
    name = read_manifest(str(out)).shards[1].name
    p = out / name
    p.write_bytes(p.read_bytes()[:-512])
    problems = verify_shards(str(out))
    assert len(problems) == 1 and name in problems[0]


def test_nothing_usable_raises_with_reasons(tmp_path):
    ann = write_jsonl(tmp_path / "a.jsonl", [make_record("x", "nope.jpg")])
    with pytest.raises(NothingUsableError, match="image_missing"):
        build_shards(str(ann), str(tmp_path), str(tmp_path / "out"), _cfg(2))
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert (tmp_path / "out" / "quarantine.jsonl").exists()


def test_atomic_open_failure_leaves_nothing(tmp_path):
    target = tmp_path / "f.bin"
    with pytest.raises(RuntimeError), atomic_open(str(target), "wb") as fh:
        fh.write(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
