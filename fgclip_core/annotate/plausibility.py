"""Which replacement is plausible for a noun: counts learnt from the captions being annotated.

``Plausibility.learn(texts)`` reads every attribute value of every sentence and counts, per noun and
dimension, how often each group describes it ("wooden table" 40, "glass table" 6). The weight of a
replacement group for a noun blends two distributions over the groups: the data's shares and the
lexicon prior (the group's ``weight``, times ``typical_weight`` where ``plausibility.yaml`` lists the
group as typical for the noun). The data's part grows with the noun's count (``c / (c + PRIOR_COUNT)``),
so a noun the data never describes falls back to the lexicon alone.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from fgclip_core.annotate.attribute_slots import parse
from fgclip_core.annotate.lexicon import Lexicon, load_lexicon

PRIOR_COUNT = 5.0  # the lexicon prior counts as this many observations
_SENTENCE = re.compile(r"(?<=[.!?;])\s+")


class Plausibility:
    def __init__(self, lex: Lexicon | None = None, counts: dict[tuple[str, str], Counter[int]] | None = None,
                 source: str = "lexicon"):
        self.lex = lex or load_lexicon()
        self.counts = counts or {}
        self.source = source  # "lexicon", or where the counts came from
        self._cache: dict[tuple[str, str], list[float]] = {}
        self.choice_cache: dict[tuple, list] = {}  # the rule generator's replacements per span kind

    @classmethod
    def learn(cls, texts: Iterable[str], lex: Lexicon | None = None, source: str = "captions") -> Plausibility:
        lex = lex or load_lexicon()
        counts: dict[tuple[str, str], Counter[int]] = {}
        for text in texts:
            for sentence in _SENTENCE.split(text or ""):
                for span in parse(sentence, lex).spans:
                    if span.noun:
                        counts.setdefault((span.noun, span.dim), Counter()).update(span.groups)
        return cls(lex, counts, source if counts else "lexicon")

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def weights(self, noun: str, dim: str) -> list[float]:
        """One weight per group of ``dim`` for values describing ``noun``."""
        key = (noun, dim)
        got = self._cache.get(key)
        if got is not None:
            return got
        groups = self.lex.dims[dim].groups
        typical = self.lex.priors.get(key, frozenset())
        prior = [g.weight * (self.lex.typical_weight if gi in typical else 1.0) for gi, g in enumerate(groups)]
        norm = sum(prior)
        prior = [p / norm for p in prior]
        counts = self.counts.get(key)
        if counts:
            total = sum(counts.values())
            a = total / (total + PRIOR_COUNT)
            prior = [(1 - a) * p + a * counts.get(gi, 0) / total + 1e-3 * p for gi, p in enumerate(prior)]
        self._cache[key] = prior
        return prior
