"""The loader over several shard sets at once (training on several image batches): every sample of
every set once per epoch, a merged manifest hash that names the combination, bad input refused."""

from __future__ import annotations

import pytest

from fgclip_core.data.config import DataConfig, LoaderConfig, ShardConfig
from fgclip_core.data.loader import FineHARDLoader
from fgclip_core.data.pipeline import build_shards
from fgclip_core.data.shards import ManifestError, read_manifest
from fgclip_core.model.processing import ImageProcessor
from tests.fixtures.data import make_record, write_images, write_jsonl
from tests.unit.test_data_loader import TOK

PROC = ImageProcessor(size=32)


def _set(root, prefix: str, n: int) -> str:
    names = write_images(root / "images", n, prefix=prefix)
    ann = write_jsonl(root / "ann.jsonl", [make_record(f"{prefix}{i}", name) for i, name in enumerate(names)])
    out = root / "shards"
    build_shards(str(ann), str(root / "images"), str(out), DataConfig(shards=ShardConfig(samples_per_shard=2)))
    return str(out)


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multi")
    return _set(tmp / "a", "a", 5), _set(tmp / "b", "b", 3)


def _cfg():
    return LoaderConfig(batch_size=2, num_workers=0, shuffle_buffer=4, seed=3, mode="shuffle", drop_last=False)


def test_every_sample_of_every_set_once_per_epoch(two_sets):
    a, b = two_sets
    loader = FineHARDLoader([a, b], TOK, PROC, _cfg())
    keys = [k for batch in loader for k in batch.keys]
    assert sorted(keys) == sorted([f"a{i}" for i in range(5)] + [f"b{i}" for i in range(3)])
    assert loader.manifest.total_samples == 8 and loader.manifest.num_shards == 5
    assert len(loader.urls) == 5 and {u.rsplit("/", 2)[0] for u in loader.urls} == {a.rsplit("/", 1)[0],
                                                                                    b.rsplit("/", 1)[0]}


def test_merged_hash_names_the_combination_and_a_single_set_is_unchanged(two_sets):
    a, b = two_sets
    ab = FineHARDLoader([a, b], TOK, PROC, _cfg()).manifest.manifest_sha256
    ba = FineHARDLoader([b, a], TOK, PROC, _cfg()).manifest.manifest_sha256
    assert ab != ba and ab not in (read_manifest(a).manifest_sha256, read_manifest(b).manifest_sha256)
    assert FineHARDLoader([a], TOK, PROC, _cfg()).manifest == read_manifest(a)


def test_a_missing_set_is_refused_by_name(two_sets, tmp_path):
    a, _ = two_sets
    with pytest.raises(ManifestError, match=str(tmp_path / "nope")):
        FineHARDLoader([a, str(tmp_path / "nope")], TOK, PROC, _cfg())
    with pytest.raises(ValueError, match="no shard set"):
        FineHARDLoader([], TOK, PROC, _cfg())
