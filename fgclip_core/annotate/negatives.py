"""Stage 3: hard negatives for region expressions.

A negative keeps the object noun and every other word of the positive (case, articles, punctuation,
the trailing period) and changes attribute values, each to one that contradicts it: a colour of
another family, a material of another family, the other side of a state ("open" -> "closed"), never a
synonym or a hyponym (``lexicon``). Difficulty levels follow FG-OVD: ``hard`` changes exactly one
attribute, ``medium`` two, ``easy`` three, ``trivial`` is the noun phrase of another object of the same
record; a run takes one level or a mix ("hard", "hard,medium", "hard:3,trivial:1").

Replacements are drawn by plausibility for the noun (:mod:`~fgclip_core.annotate.plausibility`:
counts from the captions being annotated, the lexicon as fallback), never one already named in the
expression. Backends:

- :class:`RuleNegatives` (default, offline): deterministic per (seed, expression).
- :class:`~fgclip_core.annotate.llm_negatives.LLMNegatives`: an OpenAI-compatible endpoint; every
  answer goes through the same checks (:mod:`~fgclip_core.annotate.negative_checks`) and failing ones
  are replaced by rule-based negatives.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fgclip_core.annotate.attribute_slots import (
    MODIFIER,
    Parsed,
    Slot,
    Span,
    find_slots,
    head_noun,
    parse,
    singular,
)
from fgclip_core.annotate.lexicon import COLOUR, Lexicon, Token, load_lexicon
from fgclip_core.annotate.plausibility import Plausibility

__all__ = ["LEVELS", "MODIFIER", "NegativeGenerator", "NegativeResult", "RuleNegatives", "Slot", "find_slots",
           "head_noun", "match_surface", "normalise", "parse_difficulty", "quotas", "render", "repair_negatives"]

LEVELS = ("hard", "medium", "easy", "trivial")
CHANGES = {"hard": 1, "medium": 2, "easy": 3}
_NUMBERING = re.compile(r"^\s*(?:[-*•·]+|\(?\d{1,3}[.):\]]|\(?[a-zA-Z][.)]\s)\s*")
_QUOTES = "\"'`“”‘’"
_END = re.compile(r"[.!?]+$")


@dataclass(frozen=True)
class NegativeResult:
    expression: str
    negatives: list[str]
    error: str | None = None  # set when the backend failed (the item goes to quarantine)
    levels: list[str] = field(default_factory=list)  # the difficulty level of each negative
    note: str | None = None  # why there are fewer than n
    checks: dict[str, int] = field(default_factory=dict)  # llm: candidates kept / repaired / replaced


class NegativeGenerator(Protocol):
    def provenance(self) -> dict[str, Any]: ...

    def generate(self, expressions: Sequence[str], contexts: Sequence[Sequence[str]] | None = None
                 ) -> list[NegativeResult]: ...


def parse_difficulty(spec: str | Sequence[str]) -> tuple[tuple[str, float], ...]:
    """``"hard"``, ``"hard,medium"`` or ``"hard:3,trivial:1"`` -> ((level, weight), ...)."""
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
    out: dict[str, float] = {}
    for p in parts:
        name, _, w = p.partition(":")
        name = name.strip().lower()
        if name not in LEVELS:
            raise ValueError(f"unknown difficulty {name!r} (one of {', '.join(LEVELS)})")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"difficulty {p!r}: the weight after ':' must be a number") from None
        if weight <= 0:
            raise ValueError(f"difficulty {p!r}: the weight must be > 0")
        out[name] = out.get(name, 0.0) + weight
    if not out:
        raise ValueError("difficulty is empty (one of hard, medium, easy, trivial, or a mix)")
    return tuple((lv, out[lv]) for lv in LEVELS if lv in out)


def quotas(n: int, mix: Sequence[tuple[str, float]]) -> list[tuple[str, int]]:
    """Split ``n`` negatives over the levels of a mix by weight (largest remainder, harder first)."""
    total = sum(w for _, w in mix)
    raw = [(lv, n * w / total) for lv, w in mix]
    got = {lv: int(x) for lv, x in raw}
    rest = n - sum(got.values())
    for lv, _ in sorted(raw, key=lambda r: -(r[1] - int(r[1])))[:rest]:
        got[lv] += 1
    return [(lv, got[lv]) for lv, _ in mix]


def normalise(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!?")


def _article(word: str) -> str:
    w = word.lower()
    if w.startswith(("one", "uni", "use", "eu", "uk")):
        return "a"
    if w.startswith(("hour", "honest", "heir")):
        return "an"
    return "an" if w[:1] in "aeiou" else "a"


def _match_case(src: str, word: str) -> str:
    """``word`` written in the case of ``src`` (UPPER, Capitalised or as is)."""
    if src.isupper() and len(src) > 1:
        return word.upper()
    if src[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def is_title(tokens: list[Token]) -> bool:
    """Every word capitalised ("A Red Car."): replacements are written in Title Case too."""
    words = [t.text for t in tokens if t.text[0].isalpha()]
    return len(words) > 1 and all(w[0].isupper() for w in words)


def render(expression: str, tokens: list[Token], changes: dict[tuple[int, int], str], title: bool | None = None
           ) -> str:
    """Replace token ranges ``(start, end)`` by new text, fixing a/an before each replaced range."""
    title = is_title(tokens) if title is None else title
    edits: dict[int, tuple[int, str]] = {}
    for (s, e), new in changes.items():
        new = " ".join(w[:1].upper() + w[1:] for w in new.split()) if title else new
        new = _match_case(tokens[s].text, new)
        if len(changes) == 1:  # the common case, without the general splice below
            j = s - 1
            tail = new + expression[tokens[e - 1].end:]
            if j >= 0 and tokens[j].low in ("a", "an"):
                art = _match_case(tokens[j].text, _article(new))
                return expression[: tokens[j].start] + art + expression[tokens[j].end: tokens[s].start] + tail
            return expression[: tokens[s].start] + tail
        edits[s] = (e, new)
        j = s - 1
        if j >= 0 and tokens[j].low in ("a", "an") and j not in edits:
            edits[j] = (j + 1, _match_case(tokens[j].text, _article(new)))
    text = expression
    for s in sorted(edits, reverse=True):
        e, new = edits[s]
        text = text[: tokens[s].start] + new + text[tokens[e - 1].end:]
    return text


def match_surface(positive: str, text: str) -> str:
    """``text`` with the positive's surface form: its first letter's case and its end punctuation."""
    text = text.strip()
    body = _END.sub("", text).rstrip()
    end = _END.search(positive.rstrip())
    first = next((c for c in positive if c.isalpha()), "")
    if body and first:
        body = (body[0].upper() if first.isupper() else body[0].lower()) + body[1:]
    return body + (end.group(0) if end else "")


def clean_line(raw: str) -> str:
    """A candidate line without numbering, bullets or quotes."""
    return _NUMBERING.sub("", str(raw)).strip().strip(_QUOTES).strip()


def repair_negatives(positive: str, candidates: Iterable[str], n: int, noun: str | None) -> list[str]:
    """Clean candidate negatives: strip numbering/bullets/quotes, give them the positive's surface
    form, drop empties, duplicates, copies of the positive and any that lost the noun; at most ``n``."""
    pos = normalise(positive)
    noun_re = re.compile(rf"(?<![A-Za-z0-9]){re.escape(noun.lower())}(?![A-Za-z0-9])") if noun else None
    seen: set[str] = set()
    out: list[str] = []
    for raw in candidates:
        text = match_surface(positive, clean_line(raw).rstrip(".").strip().strip(_QUOTES))
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


@dataclass(frozen=True)
class Choice:
    text: str  # what replaces the span
    groups: frozenset[int]  # the new value's groups
    weight: float
    head: str  # the value word that must not be named elsewhere in the expression ("" for a toggle)


def span_choices(lex: Lexicon, plaus: Plausibility, parsed: Parsed, si: int) -> list[Choice]:
    """Every single change of span ``si`` that contradicts it and names nothing named elsewhere."""
    span = parsed.spans[si]
    others = frozenset().union(*(s.groups for j, s in enumerate(parsed.spans) if j != si and s.dim == span.dim))
    key = (span.dim, span.groups, span.modifier, span.base, span.hyphen, span.noun, others)
    got = plaus.choice_cache.get(key)
    if got is None:
        got = plaus.choice_cache[key] = _span_choices(lex, plaus, span, others)
    named = {t.low for t in parsed.tokens}
    return [c for c in got if c.head not in named]


def _span_choices(lex: Lexicon, plaus: Plausibility, span: Span, others: frozenset[int]) -> list[Choice]:
    dim = lex.dims[span.dim]
    weights = plaus.weights(span.noun, span.dim)
    out: list[Choice] = []
    if span.dim == COLOUR:
        blocked = span.groups | others
        sep = "-" if span.hyphen else " "
        for f, g in enumerate(dim.groups):
            if f in blocked or g.write is None:
                continue
            out.append(Choice(g.write, frozenset({f}), weights[f], g.write))
            for m in sorted(lex.base_modifiers[f]):
                w = weights[f] * (0.8 if m == span.modifier else 0.1)
                out.append(Choice(f"{m}{sep}{g.write}", frozenset({f}), w, g.write))
        if span.base is not None:  # light <-> dark, or a bare basic colour made light or dark
            b, allowed, write = span.base, lex.base_modifiers[span.base], dim.groups[span.base].write
            flips = [lex.toggle[span.modifier]] if span.modifier in lex.toggle else [] if span.modifier else \
                sorted(lex.toggle)
            out.extend(Choice(f"{m}{sep}{write}", frozenset({b}), weights[b] * 0.6, "")
                       for m in flips if m in allowed and write)
        return out
    blocked = dim.blocked_by(span.groups | others)
    return [Choice(g.write, frozenset({gi}), weights[gi], g.write)
            for gi, g in enumerate(dim.groups) if gi not in blocked and g.write is not None]


def _consistent(lex: Lexicon, parsed: Parsed, change: dict[int, Choice]) -> bool:
    """Two changed values of one dimension must not name the same (or an overlapping) group."""
    seen: dict[str, frozenset[int]] = {}
    for si, c in change.items():
        dim = parsed.spans[si].dim
        prev = seen.get(dim, frozenset())
        blocked = c.groups if dim == COLOUR else lex.dims[dim].blocked_by(c.groups)
        if prev & blocked:
            return False
        seen[dim] = prev | c.groups
    return True


class RuleNegatives:
    """Offline generator: attribute changes drawn by plausibility, at the run's difficulty levels."""

    def __init__(self, n: int = 10, seed: int = 0, difficulty: str = "hard", lexicon: Lexicon | None = None,
                 plausibility: Plausibility | None = None):
        self.n, self.seed = n, seed
        self.difficulty = difficulty
        self.mix = parse_difficulty(difficulty)
        self.lex = lexicon or load_lexicon()
        self.plaus = plausibility or Plausibility(self.lex)
        self._heads: dict[str, str] = {}  # trivial: the head noun of each context expression

    @property
    def uses_context(self) -> bool:
        """``trivial`` is in the mix: the other expressions of each record are needed."""
        return "trivial" in dict(self.mix)

    def learn(self, texts: Iterable[str], source: str = "captions") -> None:
        """Weigh replacements by the attribute counts of ``texts`` (the captions being annotated)."""
        self.plaus = Plausibility.learn(texts, self.lex, source)

    def provenance(self) -> dict[str, Any]:
        return {"backend": "rules", "model": "attribute-lexicons", "prompt_version": f"rules-v2-seed{self.seed}",
                "difficulty": ",".join(lv if w == 1 else f"{lv}:{w:g}" for lv, w in self.mix),
                "plausibility": self.plaus.source}

    def generate(self, expressions: Sequence[str], contexts: Sequence[Sequence[str]] | None = None
                 ) -> list[NegativeResult]:
        ctx = contexts if contexts is not None else [()] * len(expressions)
        return [self.result(e, c) for e, c in zip(expressions, ctx, strict=True)]

    def one(self, expression: str, context: Sequence[str] = ()) -> list[str]:
        return self.result(expression, context).negatives

    def result(self, expression: str, context: Sequence[str] = (), exclude: Iterable[str] = ()) -> NegativeResult:
        parsed = parse(expression, self.lex)
        rng = random.Random(zlib.crc32(f"{self.seed}:{normalise(expression)}".encode()))
        seen = {normalise(expression), *(normalise(x) for x in exclude)}
        made: dict[str, list[str]] = {}
        notes: list[str] = []
        choices: list[list[Choice]] | None = None
        for level, _ in self.mix:
            if level == "trivial":
                got, note = self._trivial(expression, parsed, context, rng, seen)
            else:
                if choices is None:
                    choices = [span_choices(self.lex, self.plaus, parsed, si) for si in range(len(parsed.spans))]
                got, note = self._changes(expression, parsed, choices, CHANGES[level], rng, seen)
            made[level] = got
            if note:
                notes.append(f"{level}: {note}")
        negatives, levels = self._pick(made)
        note = "; ".join(notes) if len(negatives) < self.n and notes else None
        return NegativeResult(expression, negatives, levels=levels, note=note)

    def _pick(self, made: dict[str, list[str]]) -> tuple[list[str], list[str]]:
        """Each level's quota, the shortfall of one level filled by the others (in level order)."""
        out: list[tuple[str, str]] = []
        used = {lv: 0 for lv in made}
        for lv, k in quotas(self.n, self.mix):
            take = made[lv][:k]
            used[lv] = len(take)
            out.extend((t, lv) for t in take)
        for lv, _w in self.mix:
            if len(out) >= self.n:
                break
            extra = made[lv][used[lv]: used[lv] + self.n - len(out)]
            out.extend((t, lv) for t in extra)
        return [t for t, _ in out], [lv for _, lv in out]

    def _changes(self, expression: str, parsed: Parsed, choices: list[list[Choice]], k: int, rng: random.Random,
                 seen: set[str]) -> tuple[list[str], str | None]:
        spans = parsed.spans
        if not spans:
            return [], "no attribute found"
        usable = [si for si in range(len(spans)) if choices[si]]
        if len(usable) < k:
            blocked = len(spans) - len(usable)
            return [], f"needs {k} changeable attributes, found {len(usable)}" + \
                (f" ({blocked} with no contradicting value)" if blocked else "")
        out: list[str] = []
        title = is_title(parsed.tokens)
        if k == 1:
            keyed = []
            for si in usable:
                total = sum(c.weight for c in choices[si])
                keyed.extend((rng.random() ** (total / c.weight), si, c) for c in choices[si])
            keyed.sort(key=lambda x: -x[0])
            for _, si, c in keyed:
                self._add(expression, parsed, {si: c}, seen, out, title)
                if len(out) == self.n:
                    return out, None
            dims = sorted({spans[si].dim for si in usable})
            return out, f"only {len(out)} distinct single-attribute changes ({', '.join(dims)})"
        cum = {}
        for si in usable:
            acc, run = 0.0, []
            for c in choices[si]:
                acc += c.weight
                run.append(acc)
            cum[si] = run
        misses = 0
        for _ in range(8 * self.n + 20):
            picked = rng.sample(usable, k)
            change = {si: rng.choices(choices[si], cum_weights=cum[si])[0] for si in picked}
            before = len(out)
            if _consistent(self.lex, parsed, change):
                self._add(expression, parsed, change, seen, out, title)
                if len(out) == self.n:
                    return out, None
            misses = 0 if len(out) > before else misses + 1
            if misses > 3 * self.n:  # the few combinations there are have all been drawn
                break
        return out, f"only {len(out)} distinct {k}-attribute changes found"

    @staticmethod
    def _add(expression: str, parsed: Parsed, change: dict[int, Choice], seen: set[str], out: list[str],
             title: bool = False) -> None:
        text = render(expression, parsed.tokens, {(parsed.spans[si].start, parsed.spans[si].end): c.text
                                                  for si, c in change.items()}, title)
        key = normalise(text)
        if key not in seen:
            seen.add(key)
            out.append(text)

    def _trivial(self, expression: str, parsed: Parsed, context: Sequence[str], rng: random.Random,
                 seen: set[str]) -> tuple[list[str], str | None]:
        noun = singular(parsed.head) if parsed.head else None
        pool = []
        for other in context:
            h = self._heads.get(other)
            if h is None:
                if len(self._heads) > 100_000:
                    self._heads.clear()
                h = self._heads[other] = singular(parse(other, self.lex).head or "")
            if h and h != noun:
                pool.append(other)
        rng.shuffle(pool)
        out: list[str] = []
        for other in pool:
            text = match_surface(expression, other)
            key = normalise(text)
            if key not in seen:
                seen.add(key)
                out.append(text)
            if len(out) == self.n:
                return out, None
        return out, f"{len(out)} other objects in the record"

