"""A shard writer killed (SIGKILL) mid-shard leaves no readable partial shard; a re-run completes."""

from __future__ import annotations

import tarfile

import pytest
import webdataset as wds

from fgclip_core.data.config import DataConfig, ShardConfig
from fgclip_core.data.pipeline import build_shards
from fgclip_core.data.shards import ManifestError, read_manifest, shard_urls, verify_shards
from tests.fixtures.data import make_record, run_killed_build, write_images, write_jsonl

pytestmark = pytest.mark.integration
SPP = 3


def _killed_build(ann, img, out, kill_after_members: int, overwrite: bool = False) -> None:
    run_killed_build(f"""
        from fgclip_core.data.config import DataConfig, ShardConfig
        from fgclip_core.data.pipeline import build_shards
        build_shards({str(ann)!r}, {str(img)!r}, {str(out)!r}, DataConfig(shards=ShardConfig(samples_per_shard={SPP})),
                     overwrite={overwrite!r})
    """, kill_after_members)


@pytest.fixture
def inputs(tmp_path):
    names = write_images(tmp_path / "images", 8)
    return write_jsonl(tmp_path / "ann.jsonl", [make_record(n.split(".")[0], n) for n in names]), tmp_path / "images"


def test_killed_mid_shard_then_rerun(inputs, tmp_path):
    ann, img = inputs
    out = tmp_path / "shards"
    _killed_build(ann, img, out, kill_after_members=2 * SPP + 3)   # inside the second shard
    names = sorted(p.name for p in out.iterdir())
    assert "manifest.json" not in names and not [n for n in names if n.startswith("shard-000001")]
    assert any(n.startswith("_tmp.shard-000001.tar") for n in names)   # the partial one, under a temp name
    with pytest.raises(ManifestError):
        read_manifest(str(out))
    # what does carry a final name is complete
    (first,) = [n for n in names if n.startswith("shard-000000-")]
    with tarfile.open(out / first) as t:
        assert len(t.getnames()) == 2 * SPP

    # a killed build's leftovers are no build: the rerun needs no --overwrite and removes them
    build_shards(str(ann), str(img), str(out), DataConfig(shards=ShardConfig(samples_per_shard=SPP)))
    assert not [p for p in out.iterdir() if p.name.startswith("_tmp.")]
    m = read_manifest(str(out))
    assert m.total_samples == 8 and verify_shards(str(out)) == []
    assert len(list(wds.WebDataset(shard_urls(str(out)), shardshuffle=False))) == 8


def test_killed_rerun_keeps_the_previous_build_consistent(inputs, tmp_path):
    ann, img = inputs
    out = tmp_path / "shards"
    build_shards(str(ann), str(img), str(out), DataConfig(shards=ShardConfig(samples_per_shard=SPP)))
    before = read_manifest(str(out))
    _killed_build(ann, img, out, kill_after_members=2 * SPP + 1, overwrite=True)
    # shards rewritten so far are byte-identical (idempotent) and the old manifest still holds
    assert read_manifest(str(out)) == before and verify_shards(str(out)) == []
