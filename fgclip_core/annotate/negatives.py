"""Stage 3: hard negatives for region expressions.

A hard negative keeps the object noun and changes one or two attributes (colour, material, size,
count, pattern, texture, shape, state), as FG-CLIP's do: "a light grey plastic pipe" ->
"a light grey wooden pipe", "a dark pink plastic pipe". Backends:

- :class:`RuleNegatives` (default, offline): finds attribute slots with the lexicons and swaps
  them for other values of the same category; deterministic per (seed, expression).
- :class:`LLMNegatives` (``fgclip_core.annotate.llm_negatives``): asks an OpenAI-compatible
  endpoint and repairs the answer with :func:`repair_negatives`.

Every backend's output goes through :func:`repair_negatives`, so the guarantees (no numbering, no
duplicates, none equal to the positive, noun kept) hold whatever produced the text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Protocol

from fgclip_core.annotate.lexicon import Lexicon, Token, load_lexicon, tokenize

MODIFIER = "colour_modifier"
_NUMBERING = re.compile(r"^\s*(?:[-*•·]+|\(?\d{1,3}[.):\]]|\(?[a-zA-Z][.)]\s)\s*")
_QUOTES = "\"'`“”‘’"


@dataclass(frozen=True)
class NegativeResult:
    expression: str
    negatives: list[str]
    error: str | None = None  # set when the backend failed (the item goes to quarantine)


class NegativeGenerator(Protocol):
    def provenance(self) -> dict[str, Any]: ...

    def generate(self, expressions: Sequence[str]) -> list[NegativeResult]: ...


@dataclass(frozen=True)
class Slot:
    """One replaceable attribute word in an expression."""

    index: int  # token index
    category: str  # an attribute category or MODIFIER (the "light" of "light grey")
    group: int  # synonym group of the current word (-1: recognised colour that is not in the lists)


def normalise(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .")


def _attributive(tokens: list[Token], i: int, lex: Lexicon, category: str) -> bool:
    """True when tokens[i] is used as an attribute here (not as the noun: "an orange", "a glass of")."""
    nxt = tokens[i + 1] if i + 1 < len(tokens) else None
    prev = tokens[i - 1].low if i > 0 else ""
    if nxt is not None and nxt.is_word and not lex.is_function_word(nxt.text) and nxt.low not in lex.determiners:
        return True
    if nxt is not None and nxt.low in ("and", "or", ",") and i + 2 < len(tokens):
        after = tokens[i + 2].low
        if lex.attribute(after) is not None or after in lex.modifier_words:
            return True
    if prev in lex.copulas:
        return True
    if category == "colour" and prev == "in":
        return True
    return category == "material" and prev in ("of", "from")


def find_slots(expression: str, lex: Lexicon | None = None) -> tuple[list[Token], list[Slot]]:
    lex = lex or load_lexicon()
    tokens = tokenize(expression)
    slots: list[Slot] = []
    for i, tok in enumerate(tokens):
        entry = lex.attribute(tok.low)
        if entry is not None and _attributive(tokens, i, lex, entry.category):
            slots.append(Slot(i, entry.category, entry.group))
            continue
        if tok.low in lex.modifier_words and i + 1 < len(tokens):
            nxt = lex.attribute(tokens[i + 1].low)
            if nxt is not None and nxt.category == "colour" and _attributive(tokens, i + 1, lex, "colour"):
                slots.append(Slot(i, MODIFIER, lex.modifier_words[tok.low]))
    return tokens, slots


def head_noun(expression: str, lex: Lexicon | None = None) -> str | None:
    """The head noun of the first noun phrase (the word every negative must keep), or None."""
    lex = lex or load_lexicon()
    tokens, slots = find_slots(expression, lex)
    slot_idx = {s.index for s in slots}
    head: str | None = None
    for i, tok in enumerate(tokens):
        w = tok.low
        if not tok.is_word:
            if head:
                break
            continue
        if i in slot_idx or w in lex.determiners or w in lex.adverbs or w.isdigit():
            if head:
                break
            continue
        if lex.is_function_word(w) or (head and (w.endswith("ing") or w.endswith("ed"))):
            if head:
                break
            continue
        head = tok.text
    return head


def _choices(lex: Lexicon, slot: Slot) -> list[str]:
    groups = lex.colour_modifiers if slot.category == MODIFIER else lex.groups[slot.category]
    return [forms[0] for gi, forms in enumerate(groups) if gi != slot.group]


def _article(word: str) -> str:
    w = word.lower()
    if w.startswith(("one", "uni", "use", "eu", "uk")):
        return "a"
    if w.startswith(("hour", "honest", "heir")):
        return "an"
    return "an" if w[:1] in "aeiou" else "a"


def _match_case(src: str, word: str) -> str:
    if src.isupper() and len(src) > 1:
        return word.upper()
    if src[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def render(expression: str, tokens: list[Token], changes: dict[int, str]) -> str:
    """Apply token replacements and fix a/an before any replaced word."""
    out = dict(changes)
    for i in changes:
        j = i - 1
        if j >= 0 and tokens[j].low in ("a", "an"):
            out[j] = _match_case(tokens[j].text, _article(changes[i]))
    text = expression
    for i in sorted(out, reverse=True):
        tok = tokens[i]
        text = text[: tok.start] + _match_case(tok.text, out[i]) + text[tok.end:]
    return text


def _same_meaning(lex: Lexicon, slots: list[Slot], change: dict[int, str]) -> bool:
    """True if a multi-slot change only permutes/duplicates values inside one category."""
    by_cat_orig: dict[str, list[int]] = {}
    by_cat_new: dict[str, list[int]] = {}
    for s in slots:
        by_cat_orig.setdefault(s.category, []).append(s.group)
        if s.index in change:
            entry = lex.modifier_words.get(change[s.index]) if s.category == MODIFIER else \
                lex.attribute(change[s.index]).group  # type: ignore[union-attr]
            by_cat_new.setdefault(s.category, []).append(entry)  # type: ignore[arg-type]
        else:
            by_cat_new.setdefault(s.category, []).append(s.group)
    for cat, new in by_cat_new.items():
        if len(new) > 1 and (len(set(new)) < len(new) or sorted(new) == sorted(by_cat_orig[cat])):
            return True
    return False


def repair_negatives(positive: str, candidates: Iterable[str], n: int, noun: str | None) -> list[str]:
    """Clean candidate negatives: strip numbering/bullets/quotes, drop empties, duplicates, copies of
    the positive and any that lost the noun; keep at most ``n`` in order."""
    pos = normalise(positive)
    noun_re = re.compile(rf"(?<![A-Za-z0-9]){re.escape(noun.lower())}(?![A-Za-z0-9])") if noun else None
    seen: set[str] = set()
    out: list[str] = []
    for raw in candidates:
        text = _NUMBERING.sub("", str(raw)).strip().strip(_QUOTES).strip()
        text = text.rstrip(".").strip().strip(_QUOTES).strip()
        key = normalise(text)
        if not key or key == pos or key in seen:
            continue
        if noun_re is not None and not noun_re.search(text.lower()):
            continue
        seen.add(key)
        out.append(text)
        if len(out) == n:
            break
    return out


class RuleNegatives:
    """Offline generator: swap one or two attribute words for other values of the same category."""

    def __init__(self, n: int = 10, seed: int = 0, max_changes: int = 2, lexicon: Lexicon | None = None):
        self.n, self.seed, self.max_changes = n, seed, max_changes
        self.lex = lexicon or load_lexicon()

    def provenance(self) -> dict[str, Any]:
        return {"backend": "rules", "model": "attribute-lexicons", "prompt_version": f"rules-v1-seed{self.seed}"}

    def generate(self, expressions: Sequence[str]) -> list[NegativeResult]:
        return [NegativeResult(e, self.one(e)) for e in expressions]

    def one(self, expression: str) -> list[str]:
        tokens, slots = find_slots(expression, self.lex)
        if not slots:
            return []
        rng = random.Random(f"{self.seed}:{normalise(expression)}")
        choices = {s.index: _choices(self.lex, s) for s in slots}
        singles = [{s.index: c} for s in slots for c in choices[s.index]]
        rng.shuffle(singles)
        pairs = self._pairs(slots, choices, rng) if self.max_changes >= 2 and len(slots) >= 2 else []
        # About half single changes, half double changes (when there are two slots), as in FG-CLIP.
        want_singles = self.n if not pairs else (self.n + 1) // 2
        ordered = singles[:want_singles] + pairs + singles[want_singles:]
        noun = head_noun(expression, self.lex)
        candidates = (render(expression, tokens, ch) for ch in ordered if not _same_meaning(self.lex, slots, ch))
        return repair_negatives(expression, candidates, self.n, noun)

    def _pairs(self, slots: list[Slot], choices: dict[int, list[str]], rng: random.Random) -> list[dict[int, str]]:
        """Up to 4n distinct two-slot changes, drawn uniformly without replacement from all of them."""
        spaces = [(a, b, len(choices[a.index]) * len(choices[b.index])) for a, b in combinations(slots, 2)]
        total = sum(size for _, _, size in spaces)
        out = []
        for k in rng.sample(range(total), min(total, 4 * self.n)):
            for a, b, size in spaces:
                if k < size:
                    ca, cb = choices[a.index], choices[b.index]
                    out.append({a.index: ca[k // len(cb)], b.index: cb[k % len(cb)]})
                    break
                k -= size
        return out
