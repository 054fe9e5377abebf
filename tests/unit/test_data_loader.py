"""The loader in-process (num_workers=0): tensors in the right places, determinism, resume, splits,
bad samples skipped. A tiny word-hash tokenizer stands in for CLIP BPE (the real one is exercised in
tests/integration/test_data_loader_workers.py)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zlib

import pytest
import torch

from fgclip_core.data.config import DataConfig, LoaderConfig, ShardConfig
from fgclip_core.data.loader import FineHARDLoader, LoaderStateError, StarvationError, owned_shards
from fgclip_core.data.pipeline import build_shards
from fgclip_core.data.shards import ShardInfo, write_manifest
from fgclip_core.model.processing import ImageProcessor
from tests.fixtures.data import image_bytes, make_record, write_images, write_jsonl
from tests.loader_helpers import take

torch.set_num_threads(1)


class WordTokenizer:
    pad_token_id = 0
    lengths = {"long": 248, "short": 77}

    def encode(self, texts, mode="long"):
        n = self.lengths[mode]
        out = torch.zeros(len(texts), n, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [1] + [3 + zlib.crc32(w.encode()) % 1000 for w in t.split()][: n - 2] + [2]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


TOK = WordTokenizer()
PROC = ImageProcessor(size=32)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loader")
    names = write_images(tmp / "images", 12)
    recs = []
    for i, n in enumerate(names):
        r = make_record(f"s{i:02d}", n, boxes=i % 6)   # 0..5 boxes: 5 exceeds max_boxes=4
        if r["bbox_info"] and i % 2:
            r["bbox_info"][0]["flag_short_neg"] = 0
            r["bbox_info"][0]["short_expr_negs"] = []
        recs.append(r)
    ann = write_jsonl(tmp / "ann.jsonl", recs)
    out = tmp / "shards"
    build_shards(str(ann), str(tmp / "images"), str(out), DataConfig(shards=ShardConfig(samples_per_shard=2)))
    return str(out), {r["id"]: r for r in recs}


def _cfg(**kw):
    base = {"batch_size": 2, "num_workers": 0, "shuffle_buffer": 4, "seed": 7}
    base.update(kw)
    return LoaderConfig(**base)


def test_batches_put_boxes_and_negatives_in_place(shards):
    url, recs = shards
    loader = FineHARDLoader(url, TOK, PROC, _cfg(mode="shuffle", region_text="short", shuffle_buffer=1))
    batches = list(loader)
    assert sum(b.batch_size for b in batches) == 12
    b = batches[0]
    assert b.pixel_values.shape == (2, 3, 32, 32) and b.pixel_values.dtype == torch.uint8 and b.pixel_norm is not None
    assert b.normalized().pixel_values.dtype == torch.float32 and b.normalized().pixel_norm is None
    assert b.long_input_ids.shape == (2, 248) and b.short_input_ids.shape == (2, 77)
    assert b.box_xyxy.shape == (2, 4, 4) and b.box_input_ids.shape == (2, 4, 77)
    assert b.hardneg_input_ids.shape == (2, 4, 11, 77) and b.hardneg_mask.shape == (2, 4, 11)
    seen = 0
    for batch in batches:
        for i, key in enumerate(batch.keys):
            rec = recs[key]
            regions = rec["bbox_info"][:4]
            assert batch.box_mask[i].tolist() == [k < len(regions) for k in range(4)]
            assert torch.equal(batch.long_input_ids[i], TOK.encode([rec["caption"]], "long")[0])
            assert torch.equal(batch.short_input_ids[i], TOK.encode(["a photo of " + rec["short_caption"]], "short")[0])
            for k, reg in enumerate(regions):
                assert batch.box_xyxy[i, k].tolist() == pytest.approx(reg["bbox"])
                assert torch.equal(batch.box_input_ids[i, k], TOK.encode([reg["short_expr"]], "short")[0])
                if reg["flag_short_neg"]:
                    texts = [reg["short_expr"], *reg["short_expr_negs"]]
                    assert batch.hardneg_mask[i, k].all()
                    assert torch.equal(batch.hardneg_input_ids[i, k], TOK.encode(texts, "short"))
                    seen += 1
                else:
                    assert not batch.hardneg_mask[i, k].any()
                    assert (batch.hardneg_input_ids[i, k] == TOK.pad_token_id).all()
            for k in range(len(regions), 4):
                assert (batch.box_input_ids[i, k] == 0).all() and (batch.box_xyxy[i, k] == 0).all()
    assert seen > 5


def test_random_region_text_uses_both_and_is_seeded(shards):
    url, recs = shards

    def texts(seed):
        out = []
        for b in FineHARDLoader(url, TOK, PROC, _cfg(mode="shuffle", seed=seed)):
            for i, key in enumerate(b.keys):
                for k, reg in enumerate(recs[key]["bbox_info"][:4]):
                    short = torch.equal(b.box_input_ids[i, k], TOK.encode([reg["short_expr"]], "short")[0])
                    out.append((key, k, short))
        return sorted(out)

    a = texts(1)
    assert {s for _, _, s in a} == {True, False}
    assert a == texts(1)


def _same(a, b):
    return len(a) == len(b) and all(x.keys == y.keys and torch.equal(x.normalized().pixel_values, y.normalized().pixel_values)
                                    and torch.equal(x.box_input_ids, y.box_input_ids) for x, y in zip(a, b, strict=True))


def test_deterministic_given_seed_and_epoch(shards):
    url, _ = shards
    a = take(FineHARDLoader(url, TOK, PROC, _cfg()), 8)
    b = take(FineHARDLoader(url, TOK, PROC, _cfg()), 8)
    c = take(FineHARDLoader(url, TOK, PROC, _cfg(seed=8)), 8)
    d = take(FineHARDLoader(url, TOK, PROC, _cfg(), epoch=1), 8)
    assert _same(a, b)
    assert [x.keys for x in a] != [x.keys for x in c]
    assert [x.keys for x in a] != [x.keys for x in d]


@pytest.mark.parametrize("mode", ["resample", "shuffle"])
def test_resume_equals_tail_of_uninterrupted_stream(shards, mode):
    url, _ = shards
    full = take(FineHARDLoader(url, TOK, PROC, _cfg(mode=mode)), 6)
    first = FineHARDLoader(url, TOK, PROC, _cfg(mode=mode))
    head = take(first, 3)
    state = json.loads(json.dumps(first.state_dict()))   # survives a JSON checkpoint
    resumed = FineHARDLoader(url, TOK, PROC, _cfg(mode=mode))
    resumed.load_state_dict(state)
    tail = take(resumed, 3)
    assert _same(head + tail, full)


def test_resume_refuses_a_different_setup(shards):
    url, _ = shards
    state = FineHARDLoader(url, TOK, PROC, _cfg()).state_dict()
    with pytest.raises(LoaderStateError, match="seed"):
        FineHARDLoader(url, TOK, PROC, _cfg(seed=99)).load_state_dict(state)


def test_shuffle_epochs_advance_and_cover_everything(shards):
    url, recs = shards
    loader = FineHARDLoader(url, TOK, PROC, _cfg(mode="shuffle"))
    e0 = [k for b in loader for k in b.keys]
    assert loader.epoch == 1
    e1 = [k for b in loader for k in b.keys]
    assert sorted(e0) == sorted(e1) == sorted(recs) and e0 != e1


def test_ranks_get_disjoint_equal_parts(shards):
    url, recs = shards
    cfg = _cfg(mode="shuffle")
    parts = [[k for b in FineHARDLoader(url, TOK, PROC, cfg, rank=r, world_size=2) for k in b.keys] for r in (0, 1)]
    assert not set(parts[0]) & set(parts[1])
    assert len(parts[0]) == len(parts[1]) == 6 and set(parts[0]) | set(parts[1]) == set(recs)


def test_starvation_is_refused_with_the_needed_count(shards):
    url, _ = shards   # 6 shards
    with pytest.raises(StarvationError, match="at least 8 shards"):
        FineHARDLoader(url, TOK, PROC, _cfg(num_workers=4), rank=0, world_size=2)
    assert owned_shards(6, 1, 2, 0, 1) == [1, 3, 5]


def test_bad_samples_are_counted_and_skipped(tmp_path):
    def tar_bytes(members):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    good = json.dumps(make_record("ok", "ok.jpg")).encode()
    members = [("ok.jpg", image_bytes()), ("ok.json", good),
               ("broken.jpg", b"not an image"), ("broken.json", json.dumps(make_record("broken", "b.jpg")).encode()),
               ("nojson.jpg", image_bytes()),
               ("badjson.jpg", image_bytes()), ("badjson.json", b"{"),
               ("ok2.jpg", image_bytes(seed=2)), ("ok2.json", json.dumps(make_record("ok2", "ok2.jpg")).encode())]
    data, junk = tar_bytes(members), b"this is not a tar file at all" * 30
    (tmp_path / "shard-000000.tar").write_bytes(data)
    (tmp_path / "shard-000001.tar").write_bytes(junk)
    # the manifest's hashes match: these shards are what was written, bad samples and all
    write_manifest(str(tmp_path), [ShardInfo(name="shard-000000.tar", count=5, bytes=len(data),
                                             sha256=hashlib.sha256(data).hexdigest()),
                                   ShardInfo(name="shard-000001.tar", count=1, bytes=len(junk),
                                             sha256=hashlib.sha256(junk).hexdigest())], 5)
    loader = FineHARDLoader(str(tmp_path), TOK, PROC, _cfg(mode="shuffle", shuffle_buffer=1, drop_last=False))
    batches = list(loader)
    assert sorted(k for b in batches for k in b.keys) == ["ok", "ok2"]
    c = loader.counters
    assert c["samples_ok"] == 2 and c["bad_samples"] == 3 and c["shard_errors"] == 1
    assert c["bad_by_reason"] == {"image_corrupt": 1, "sample_incomplete": 1, "record_malformed": 1}
    list(loader)   # a second epoch adds to the counts
    assert loader.counters["bad_samples"] == 6 and loader.counters["samples_ok"] == 4


def test_too_few_samples_for_a_batch_yields_nothing_and_advances(shards):
    url, _ = shards   # 6 shards of 2: with 2 ranks each worker has 6 samples, fewer than a batch of 8
    loader = FineHARDLoader(url, TOK, PROC, _cfg(mode="shuffle", batch_size=8), rank=1, world_size=2)
    assert loader.batches_per_epoch() == 0
    assert list(loader) == [] and loader.epoch == 1


def test_resume_rereads_at_most_one_block(shards, monkeypatch):
    import fgclip_core.data.worker_stream as loader_mod  # where the worker stream opens shards

    url, _ = shards
    cfg = _cfg(resume_block_shards=1, shuffle_buffer=2)
    full = take(FineHARDLoader(url, TOK, PROC, cfg), 13)
    first = FineHARDLoader(url, TOK, PROC, cfg)
    take(first, 12)
    opened = []
    real = loader_mod.iter_tar_samples
    monkeypatch.setattr(loader_mod, "iter_tar_samples",
                        lambda u, fs=None, check=None: (opened.append(u), real(u, fs, check))[1])
    resumed = FineHARDLoader(url, TOK, PROC, cfg)
    resumed.load_state_dict(first.state_dict())
    nxt = take(resumed, 1)
    assert _same(nxt, full[12:])
    assert 1 <= len(opened) <= 3   # not the 12+ shards read before the cut


def test_batch_normalisation_equals_per_image_processing(shards):
    """The loader packs uint8 batches that the trainer normalises (data.pixels); any other processor goes per
    image and hands over float32. Same tensors once normalised."""
    url, _ = shards

    class PerImage:   # not an ImageProcessor: the loader calls preprocess_one per image
        size = PROC.size

        def preprocess_one(self, image):
            return PROC.preprocess_one(image)

    fast = FineHARDLoader(url, TOK, PROC, _cfg(mode="shuffle"))
    slow = FineHARDLoader(url, TOK, PerImage(), _cfg(mode="shuffle"))
    assert fast.pixel_batcher is not None and slow.pixel_batcher is None
    a, b = list(fast), list(slow)
    assert a and _same(a, b)
    assert all(x.pixel_values.dtype == torch.uint8 and x.pixel_norm is not None for x in a)
    assert all(y.pixel_values.dtype == torch.float32 and y.pixel_norm is None for y in b)
    assert all(x.to("cpu").pixel_values.is_contiguous() and x.to("cpu").pixel_values.dtype == torch.float32 for x in a)
    assert a[0].to("cpu", normalize=False).pixel_values.dtype == torch.uint8
