"""The loader's word-cached CLIP encoder gives exactly the tokenizer's ids."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fgclip_core.data.tokens import FastEncoder, FastEncoderUnavailable
from fgclip_core.model.processing import load_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_checkpoint_dir):
    return load_tokenizer(tiny_checkpoint_dir)


@pytest.fixture(scope="module")
def fast(tok):
    return FastEncoder.for_tokenizer(tok, max_words=50)   # small cache: eviction is exercised too


def test_sample_texts_identical(fast, tok, sample_set):
    short, long = [], []
    for r in sample_set.records:
        long.append(r.caption)
        short.append("a photo of " + r.short_caption)
        for g in r.bbox_info:
            short += [g.short_expr, g.long_expr, *g.short_expr_negs]
    for _ in range(2):   # cold, then warm cache
        assert torch.equal(fast.encode(short, "short"), tok.encode(short, "short"))
        assert torch.equal(fast.encode(long, "long"), tok.encode(long, "long"))
    assert fast.hits > fast.misses > 0


_ascii = st.text(alphabet=st.characters(min_codepoint=9, max_codepoint=126), max_size=120)
_any = st.text(max_size=60)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_ascii, _any, st.just("<|endoftext|> x"), st.just("it's A B's 12,5 ... ok")), max_size=6),
       st.sampled_from(["short", "long"]))
def test_property_random_texts_identical(fast, tok, texts, mode):
    assert torch.equal(fast.encode(texts, mode), tok.encode(texts, mode))


def test_truncation_keeps_eos(fast, tok):
    text = " ".join(f"word{i}" for i in range(400))
    ids = fast.encode([text], "short")[0]
    assert ids[-1].item() == tok.eos_token_id and torch.equal(ids, tok.encode([text], "short")[0])


def test_other_tokenizers_are_refused_with_a_reason():
    class Plain:
        def encode(self, texts, mode="long"):
            return torch.zeros(len(texts), 77, dtype=torch.long)

    with pytest.raises(FastEncoderUnavailable, match="backend"):
        FastEncoder.for_tokenizer(Plain())
