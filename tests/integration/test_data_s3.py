"""Shards on S3 through a real S3-compatible server on loopback (moto_server)."""

from __future__ import annotations

import json

import pytest
import webdataset as wds
from click.testing import CliRunner

from fgclip_core import storage
from fgclip_core.cli import cli
from fgclip_core.data.config import DataConfig, LoaderConfig, ShardConfig
from fgclip_core.data.loader import FineHARDLoader
from fgclip_core.data.pipeline import build_shards
from fgclip_core.data.shards import read_manifest, register_webdataset_schemes, shard_urls, verify_shards
from tests.fixtures.data import make_record, write_images, write_jsonl
from tests.unit.test_data_loader import PROC, TOK

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3_inputs")
    names = write_images(tmp / "images", 6)
    recs = [make_record(n.split(".")[0], n) for n in names] + [make_record("gone", "gone.jpg")]
    return write_jsonl(tmp / "ann.jsonl", recs), tmp / "images"


@pytest.fixture(scope="module")
def built(moto_s3, inputs):
    ann, img = inputs
    url = moto_s3.new_prefix("shards")
    res = build_shards(str(ann), str(img), url, DataConfig(shards=ShardConfig(samples_per_shard=2)))
    return url, res


def test_build_read_and_load_on_s3(built, inputs, tmp_path):
    ann, img = inputs
    url, res = built
    assert res.summary.kept == 6 and res.summary.by_reason == {"image_missing": 1}
    fs, path = storage.filesystem(url)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    m = read_manifest(url)
    assert names == ["manifest.json", "quarantine.jsonl"] + [f"shard-{i:06d}-{s.sha256[:16]}.tar"
                                                             for i, s in enumerate(m.shards)]
    assert m.total_samples == 6 and verify_shards(url) == []

    # same bytes as a local build (the store changes nothing)
    local = tmp_path / "local"
    build_shards(str(ann), str(img), str(local), DataConfig(shards=ShardConfig(samples_per_shard=2)))
    assert [s.sha256 for s in read_manifest(str(local)).shards] == [s.sha256 for s in m.shards]

    register_webdataset_schemes()
    keys = [s["__key__"] for s in wds.WebDataset(shard_urls(url), shardshuffle=False)]
    assert keys == [f"img{i:03d}" for i in range(6)]

    loader = FineHARDLoader(url, TOK, PROC, LoaderConfig(batch_size=2, mode="shuffle", num_workers=0))
    assert sorted(k for b in loader for k in b.keys) == keys


def test_loader_workers_open_s3_in_their_process(built):
    url, _ = built
    loader = FineHARDLoader(url, TOK, PROC, LoaderConfig(batch_size=1, mode="shuffle", num_workers=2,
                                                         drop_last=False, equalize_ranks=False))
    assert sorted(k for b in loader for k in b.keys) == [f"img{i:03d}" for i in range(6)]


def test_cli_build_shards_to_s3(moto_s3, inputs):
    ann, img = inputs
    url = moto_s3.new_prefix("cli")
    r = CliRunner().invoke(cli, ["data", "build-shards", "--annotations", str(ann), "--images", str(img),
                                 "--out", url, "--samples-per-shard", "4"])
    assert r.exit_code == 0, r.output
    fs, path = storage.filesystem(url)
    assert json.loads(fs.cat(f"{path}/manifest.json"))["num_shards"] == 2


def test_unwritable_bucket_is_a_clear_error(moto_s3, inputs):
    ann, img = inputs
    r = CliRunner().invoke(cli, ["data", "build-shards", "--annotations", str(ann), "--images", str(img),
                                 "--out", "s3://no-such-bucket-here/x"])
    assert r.exit_code != 0 and "cannot be written" in r.output, r.output
