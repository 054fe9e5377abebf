"""Exact, faster CLIP BPE encoding for the loader: a word-level cache in front of the real tokenizer.

A training sample carries ~50 short texts (caption, regions, 10 hard negatives per box); the
``tokenizers`` pipeline spends ~50-80 us per text on normalisation and regex pre-tokenisation, more
than decoding the image. CLIP's pipeline is word-local: NFC + whitespace collapse + lowercase,
then a split into letter runs / single digits / punctuation runs / contractions, then BPE per word,
then ``<|startoftext|> ... <|endoftext|>``, truncated with EOS kept, padded. So for plain-ASCII
texts (the overwhelming case) this class lowercases and splits in Python and looks each word up in
a bounded (first-in first-out) cache whose misses are encoded by the real tokenizer; any other text goes to the real
tokenizer whole. The result is the same ids, only faster (``tests/unit/test_data_tokens.py``
checks equality, including random texts).

``FastEncoder.for_tokenizer`` accepts only a tokenizer whose backend pipeline is exactly the CLIP
one it mirrors (checked from the backend's own description and on probe texts), and says why not
otherwise.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from itertools import chain
from typing import Any, Literal

import numpy as np
import torch

# The CLIP pre-tokenizer split, restricted to ASCII (the only texts taken by the fast path).
_WORDS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")
# Texts the fast path takes: printable ASCII plus ordinary whitespace, and no special-token syntax.
_ASCII = re.compile(r"^[\x20-\x7e\t\n\r]*$")
_EXPECTED_PIPELINE = (
    "NFC()", 'Replace(pattern=Regex("\\s+"), content=" ")', "Lowercase()",
    "Split(pattern=Regex(\"<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|"
    "[^\\s\\p{L}\\p{N}]+\"), behavior=Removed, invert=True)",
    "ByteLevel(add_prefix_space=False",
)
PROBES = ["a photo of a cat", "Two  DOGS,\tplaying!! in 3 parks; it's 2024.", "x" * 400,
          "the man's red-and-white hat... isn't it?", "<|endoftext|> literal", "café ünïcode ok"]


class FastEncoderUnavailable(ValueError):
    """The tokenizer is not the CLIP BPE pipeline this cache mirrors."""


class FastEncoder:
    def __init__(self, tokenizer: Any, max_words: int = 500_000) -> None:
        self.tokenizer = tokenizer
        from tokenizers import Tokenizer

        # A private copy: the shared backend carries whatever padding/truncation its last caller set.
        self._backend = Tokenizer.from_str(tokenizer.hf.backend_tokenizer.to_str())
        self._backend.no_padding()
        self._backend.no_truncation()
        self.bos = int(tokenizer.bos_token_id)
        self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id)
        self.lengths: dict[str, int] = dict(tokenizer.lengths)
        self.max_words = max_words
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, max_words: int = 500_000) -> FastEncoder:
        hf = getattr(tokenizer, "hf", None)
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None or not hasattr(tokenizer, "lengths"):
            raise FastEncoderUnavailable(f"{type(tokenizer).__name__} has no fast `tokenizers` backend")
        described = f"{backend.normalizer} {backend.pre_tokenizer} {backend.post_processor}"
        missing = [p for p in _EXPECTED_PIPELINE if p not in described]
        if missing or ("RobertaProcessing" not in described and "TemplateProcessing" not in described):
            raise FastEncoderUnavailable(f"tokenizer pipeline is not CLIP's (missing {missing}): {described}")
        enc = cls(tokenizer, max_words)
        modes: tuple[Literal["long", "short"], ...] = ("short", "long")
        for mode in modes:
            if not torch.equal(enc.encode(PROBES, mode), tokenizer.encode(PROBES, mode)):
                raise FastEncoderUnavailable(f"word-cached encoding differs from the tokenizer on probe texts ({mode})")
        return enc

    @property
    def pad_token_id(self) -> int:
        return self.pad

    def _word(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is not None:
            self.hits += 1
            return ids
        self.misses += 1
        ids = list(self._backend.encode(word, add_special_tokens=False).ids)
        self._cache[word] = ids
        if len(self._cache) > self.max_words:
            self._cache.popitem(last=False)
        return ids

    def encode(self, texts: Sequence[str], mode: Literal["long", "short"] = "long") -> torch.Tensor:
        """Same contract and ids as ``FGCLIPTokenizer.encode``."""
        length = self.lengths[mode]
        out = np.full((len(texts), length), self.pad, dtype=np.int64)
        slow: list[int] = []
        cache = self._cache
        for i, text in enumerate(texts):
            if "<|" in text or not _ASCII.match(text):
                slow.append(i)
                continue
            words = _WORDS.findall(text.lower())
            try:
                parts = [cache[w] for w in words]
                self.hits += len(words)
            except KeyError:
                parts = [self._word(w) for w in words]
            ids = [self.bos, *chain.from_iterable(parts)]
            if len(ids) > length - 1:
                del ids[length - 1:]
            ids.append(self.eos)
            out[i, : len(ids)] = ids
        result = torch.from_numpy(out)
        if slow:
            result[slow] = self.tokenizer.encode([texts[i] for i in slow], mode)
        return result
