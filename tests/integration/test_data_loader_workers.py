"""The loader with real DataLoader worker processes, the bundled sample's shards and the real
CLIP tokenizer / image processor of the tiny checkpoint."""

from __future__ import annotations

import pytest
import torch
import webdataset as wds

from fgclip_core.data.config import LoaderConfig
from fgclip_core.data.loader import FineHARDLoader, StarvationError, build_loader
from fgclip_core.model.processing import ImageProcessor, load_tokenizer
from tests.loader_helpers import take

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def parts(tiny_checkpoint_dir):
    return load_tokenizer(tiny_checkpoint_dir), ImageProcessor.from_pretrained(tiny_checkpoint_dir)


def _cfg(**kw):
    base = {"batch_size": 2, "num_workers": 2, "shuffle_buffer": 3, "seed": 3}
    base.update(kw)
    return LoaderConfig(**base)


def _sig(batches):
    return [(b.keys, b.pixel_values.sum().item(), b.hardneg_input_ids.sum().item()) for b in batches]


def test_sample_shards_read_by_plain_webdataset(sample_shards, sample_set):
    keys = [s["__key__"] for s in wds.WebDataset(sample_shards.pattern, shardshuffle=False)]
    assert sorted(keys) == sorted(r.id for r in sample_set.records)


def test_real_tokenizer_batches(sample_shards, tiny_checkpoint_dir, sample_set):
    loader = build_loader(sample_shards.url, str(tiny_checkpoint_dir), _cfg(num_workers=0, mode="shuffle"))
    tok = load_tokenizer(tiny_checkpoint_dir)
    recs = {r.id: r for r in sample_set.records}
    batches = list(loader)
    size = ImageProcessor.from_pretrained(tiny_checkpoint_dir).size
    assert batches and all(b.pixel_values.shape[1:] == (3, size, size) for b in batches)
    b = batches[0]
    rec = recs[b.keys[0]]
    assert torch.equal(b.long_input_ids[0], tok.encode([rec.caption], "long")[0])
    assert torch.equal(b.short_input_ids[0], tok.encode(["a photo of " + rec.short_caption], "short")[0])
    flagged = [(bb, i, k) for bb in batches for i in range(bb.batch_size) for k in range(4) if bb.hardneg_mask[i, k, 0]]
    assert flagged  # the sample has hard negatives
    for bb, i, k in flagged:
        reg = recs[bb.keys[i]].bbox_info[k]
        assert bb.box_xyxy[i, k].tolist() == pytest.approx(reg.bbox)
        assert torch.equal(bb.hardneg_input_ids[i, k], tok.encode([reg.short_expr, *reg.short_expr_negs], "short"))


@pytest.mark.parametrize("cut", [3, 4])   # odd and even cut points exercise the worker round-robin
def test_two_workers_deterministic_and_resumable(sample_shards, parts, cut):
    tok, proc = parts
    full = take(FineHARDLoader(sample_shards.url, tok, proc, _cfg()), 8)
    again = take(FineHARDLoader(sample_shards.url, tok, proc, _cfg()), 8)
    assert _sig(full) == _sig(again)
    first = FineHARDLoader(sample_shards.url, tok, proc, _cfg())
    head = take(first, cut)
    resumed = FineHARDLoader(sample_shards.url, tok, proc, _cfg())
    resumed.load_state_dict(first.state_dict())
    tail = take(resumed, 8 - cut)
    assert _sig(head + tail) == _sig(full)


def test_two_workers_shuffle_epoch_covers_all_once_and_resumes(sample_shards, parts):
    tok, proc = parts
    cfg = _cfg(mode="shuffle", drop_last=False, equalize_ranks=False)
    full = list(FineHARDLoader(sample_shards.url, tok, proc, cfg))
    keys = [k for b in full for k in b.keys]
    assert len(keys) == len(set(keys)) == sample_shards.manifest.total_samples
    first = FineHARDLoader(sample_shards.url, tok, proc, cfg)
    head = take(first, 3)
    resumed = FineHARDLoader(sample_shards.url, tok, proc, cfg)
    resumed.load_state_dict(first.state_dict())
    assert _sig(head + list(resumed)) == _sig(full)


def test_ranks_times_workers_no_starvation(sample_shards, parts):
    tok, proc = parts
    n = sample_shards.manifest.num_shards
    with pytest.raises(StarvationError, match=f"at least {2 * n} shards"):
        FineHARDLoader(sample_shards.url, tok, proc, _cfg(num_workers=n), world_size=2)
    # every rank of 2 x 2 workers yields the same number of batches in an epoch
    counts = [len(list(FineHARDLoader(sample_shards.url, tok, proc, _cfg(mode="shuffle"), rank=r, world_size=2)))
              for r in (0, 1)]
    assert counts[0] == counts[1] > 0
