"""Pre-tokenised shards (data.pretok): stored ids equal on-the-fly tokenisation for every field, a
loader with another tokenizer/prefix/lengths tokenises on the fly and says why, plain webdataset
still reads the shards."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from click.testing import CliRunner

from fgclip_core.cli import cli
from fgclip_core.data.config import DataConfig, LoaderConfig, ShardConfig
from fgclip_core.data.io import record_from_raw
from fgclip_core.data.loader import FineHARDLoader
from fgclip_core.data.pipeline import build_shards
from fgclip_core.data.pretok import TOKENS_EXT, TokensUnavailable, read_tokens, record_texts
from fgclip_core.data.shards import read_manifest, shard_urls
from fgclip_core.data.tar_read import iter_tar_samples
from fgclip_core.model.processing import ImageProcessor, build_clip_tokenizer, load_tokenizer
from tests.fixtures.data import make_record, write_images, write_jsonl

torch.set_num_threads(1)
PROC = ImageProcessor(size=16)
PREFIX = LoaderConfig().short_caption_prefix


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    build_clip_tokenizer(d)
    return d


def _records(names):
    recs = []
    for i, n in enumerate(names):
        r = make_record(f"p{i:02d}", n, boxes=i % 6, negatives=10)
        if r["bbox_info"]:
            r["bbox_info"][0]["long_expr"] = "" if i % 3 == 0 else r["bbox_info"][0]["long_expr"]
            if i % 2:
                r["bbox_info"][0]["flag_short_neg"] = 0
                r["bbox_info"][0]["short_expr_negs"] = []
        if i == 1:
            r["caption"] = " ".join(f"word{j} and more, it's 'quoted'!" for j in range(120))   # > 248 tokens
            r["short_caption"] = "Café ÜNÏCODE <|endoftext|> text"   # slow path of the word cache
        if i == 2:
            r["short_caption"] = "x " * 200   # truncated at 77 with EOS kept
        recs.append(r)
    return recs


@pytest.fixture(scope="module")
def shard_sets(tmp_path_factory, tok_dir):
    tmp = tmp_path_factory.mktemp("pretok")
    names = write_images(tmp / "images", 10)
    ann = write_jsonl(tmp / "ann.jsonl", _records(names))
    cfg = DataConfig(shards=ShardConfig(samples_per_shard=2))
    with_ids, without = tmp / "with", tmp / "without"
    build_shards(str(ann), str(tmp / "images"), str(with_ids), cfg, tokenizer=load_tokenizer(tok_dir))
    build_shards(str(ann), str(tmp / "images"), str(without), cfg)
    return str(with_ids), str(without)


def _cfg(**kw):
    return LoaderConfig(**{"batch_size": 2, "num_workers": 0, "shuffle_buffer": 4, "seed": 3, "mode": "shuffle", **kw})


def _equal(a, b):
    assert len(a) == len(b) and a
    for x, y in zip(a, b, strict=True):
        assert x.keys == y.keys
        for f in ("pixel_values", "long_input_ids", "short_input_ids", "box_xyxy", "box_mask", "box_input_ids",
                  "hardneg_input_ids", "hardneg_mask"):
            assert torch.equal(getattr(x, f), getattr(y, f)), f


def test_every_stored_row_equals_the_tokenizer(shard_sets, tok_dir):
    url, _ = shard_sets
    tok = load_tokenizer(tok_dir)
    m = read_manifest(url)
    assert m.tokens is not None and m.tokens["member"] == TOKENS_EXT and m.tokens["short_caption_prefix"] == PREFIX
    rows = 0
    for u in shard_urls(url):
        for raw in iter_tar_samples(u):
            rec = record_from_raw(json.loads(raw["json"]))
            t = read_tokens(raw[TOKENS_EXT], raw["json"], rec, 248, 77)
            for r, (text, mode) in enumerate(record_texts(rec, PREFIX)):
                want = tok.encode([text], mode)[0]
                got = torch.full_like(want, tok.pad_token_id)
                got[: t.lens[r]] = torch.from_numpy(np.array(t.flat[t.starts[r]: t.starts[r] + t.lens[r]], dtype=np.int64))
                assert torch.equal(got, want), (text, mode)
                rows += 1
    assert rows > 100


@pytest.mark.parametrize("region_text", ["random", "short", "long"])
def test_loader_with_stored_ids_equals_on_the_fly(shard_sets, tok_dir, region_text, caplog):
    with_ids, without = shard_sets
    tok = load_tokenizer(tok_dir)
    cfg = _cfg(region_text=region_text)
    with caplog.at_level(logging.WARNING):
        stored = FineHARDLoader(with_ids, tok, PROC, cfg)
        a = list(stored)
    assert stored.tokens is not None and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    plain = FineHARDLoader(without, tok, PROC, cfg)
    assert plain.tokens is None
    _equal(a, list(plain))
    slow = FineHARDLoader(without, tok, PROC, _cfg(region_text=region_text, fast_tokenizer="off"))
    _equal(a, list(slow))


@pytest.mark.parametrize("change", [{"short_caption_prefix": "a picture of "}, {"short_length": 64}])
def test_other_prefix_or_length_tokenises_on_the_fly_with_a_warning(shard_sets, tok_dir, change, caplog):
    with_ids, without = shard_sets
    tok = load_tokenizer(tok_dir)
    if "short_length" in change:
        tok.lengths["short"] = change["short_length"]
    cfg = _cfg(**change)
    with caplog.at_level(logging.WARNING):
        loader = FineHARDLoader(with_ids, tok, PROC, cfg)
    assert loader.tokens is None
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "NOT using the shards' stored token ids" in warned[0]
    _equal(list(loader), list(FineHARDLoader(without, tok, PROC, cfg)))


def test_other_tokenizer_is_a_miss(shard_sets, tok_dir, caplog):
    with_ids, _ = shard_sets
    tok = load_tokenizer(tok_dir)
    tok.hf.add_tokens(["redobject"])   # another vocabulary: other ids for some texts
    with caplog.at_level(logging.WARNING):
        assert FineHARDLoader(with_ids, tok, PROC, _cfg()).tokens is None
    assert any("fingerprint" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_stale_or_missing_member_falls_back_per_sample(shard_sets, tok_dir, caplog):
    with_ids, without = shard_sets
    raw = next(iter_tar_samples(shard_urls(with_ids)[1]))
    rec = record_from_raw(json.loads(raw["json"]))
    assert read_tokens(raw[TOKENS_EXT], raw["json"], rec, 248, 77).lens
    edited = json.loads(raw["json"])
    edited["caption"] += " edited"
    with pytest.raises(TokensUnavailable, match="another record"):
        read_tokens(raw[TOKENS_EXT], json.dumps(edited).encode(), record_from_raw(edited), 248, 77)
    with pytest.raises(TokensUnavailable, match="rows"):
        rec.bbox_info = rec.bbox_info[:-1]
        read_tokens(raw[TOKENS_EXT], raw["json"], rec, 248, 77)
    with pytest.raises(TokensUnavailable):
        read_tokens(b"not npy", raw["json"], rec, 248, 77)
    with pytest.raises(TokensUnavailable, match="lengths"):
        read_tokens(raw[TOKENS_EXT], raw["json"], record_from_raw(json.loads(raw["json"])), 248, 3)
    tok = load_tokenizer(tok_dir)
    loader = FineHARDLoader(with_ids, tok, PROC, _cfg())
    loader.tokens = {**loader.tokens, "member": "missing.npy"}   # every sample misses its ids
    with caplog.at_level(logging.WARNING):
        a = list(loader)
    assert sum("not usable" in r.getMessage() for r in caplog.records) == 1   # once per worker
    _equal(a, list(FineHARDLoader(without, tok, PROC, _cfg())))


def test_plain_webdataset_and_manifest_compatibility(shard_sets):
    with_ids, without = shard_sets
    samples = list(wds.WebDataset(shard_urls(with_ids), shardshuffle=False).decode("pil"))
    assert len(samples) == 10 and all(s["jpg"].mode == "RGB" and isinstance(s[TOKENS_EXT], np.ndarray) for s in samples)
    # A manifest without token ids has no "tokens" key at all (its hash is what it always was).
    assert "tokens" not in json.loads(Path(without, "manifest.json").read_text())
    assert read_manifest(without).tokens is None


def test_cli_tokenizer_option(tmp_path, tok_dir):
    names = write_images(tmp_path / "images", 3)
    ann = write_jsonl(tmp_path / "ann.jsonl", _records(names))
    out = tmp_path / "shards"
    r = CliRunner().invoke(cli, ["data", "build-shards", "--annotations", str(ann), "--images", str(tmp_path / "images"),
                                 "--out", str(out), "--samples-per-shard", "2", "--tokenizer", str(tok_dir)])
    assert r.exit_code == 0, r.output
    assert read_manifest(str(out)).tokens["fingerprint"]
    bad = CliRunner().invoke(cli, ["data", "build-shards", "--annotations", str(ann), "--images",
                                   str(tmp_path / "images"), "--out", str(tmp_path / "o2"), "--tokenizer", str(tmp_path)])
    assert bad.exit_code != 0 and "tokenizer" in bad.output.lower()


def test_cli_builtin_clip_tokenizer_matches_a_checkpoint_tokenizer(tmp_path, tok_dir, monkeypatch):
    """``--tokenizer clip`` stores ids a loader with any CLIP-tokenizer checkpoint takes (same fingerprint)."""
    monkeypatch.chdir(tmp_path)   # no folder named "clip" here: the name means the built-in tokenizer
    names = write_images(tmp_path / "images", 3)
    ann = write_jsonl(tmp_path / "ann.jsonl", _records(names))
    r = CliRunner().invoke(cli, ["data", "build-shards", "--annotations", str(ann), "--images", str(tmp_path / "images"),
                                 "--out", str(tmp_path / "shards"), "--samples-per-shard", "2", "--tokenizer", "clip"])
    assert r.exit_code == 0, r.output
    loader = FineHARDLoader(str(tmp_path / "shards"), load_tokenizer(tok_dir), PROC, LoaderConfig(batch_size=1))
    assert loader.tokens is not None   # fingerprint matched: stored ids are used
