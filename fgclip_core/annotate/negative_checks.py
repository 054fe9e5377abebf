"""Check a candidate negative against its positive: what changed, and whether it is a valid negative.

Used on every LLM answer (a failing one is replaced by a rule-based negative) and by the
``--report``. The candidate is first given the positive's surface form (numbering and quotes
stripped, first letter's case, end punctuation, a/an); then both are parsed into attribute spans and
must read the same with every span blanked out (same noun, same other words, same attributes in the
same order). Each span whose value differs is one change, and it must contradict the old value:

- colour: a family the old value is not in (or light <-> dark, or a bare basic colour made light
  or dark), with a modifier the new family allows ("light navy", "pastel black" fail);
- any other dimension: a group that the old value's groups neither are nor overlap;
- never a value named by another span of the same dimension ("grey, red, red and yellow").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fgclip_core.annotate.attribute_slots import Parsed, Span, in_dim, parse
from fgclip_core.annotate.lexicon import COLOUR, Lexicon, load_lexicon
from fgclip_core.annotate.negatives import _article, _match_case, clean_line, match_surface, normalise

_ARTICLE = re.compile(r"\b(a|an|A|An|AN)(\s+)(?=([A-Za-z0-9]))")


@dataclass(frozen=True)
class Change:
    dim: str
    family: str  # the attribute family (colour, material, pattern, ...)
    old: str
    new: str


@dataclass(frozen=True)
class Verdict:
    text: str  # the candidate with the positive's surface form
    changes: tuple[Change, ...]
    problem: str | None  # why it is not a valid negative; None: valid
    repaired: bool  # the text had to be changed (numbering, case, punctuation, articles)


def fix_articles(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        rest = text[m.end():]
        word = re.match(r"[A-Za-z0-9][\w-]*", rest)
        return _match_case(m.group(1), _article(word.group(0) if word else "")) + m.group(2)

    return _ARTICLE.sub(sub, text)


def _span_text(p: Parsed, s: Span, text: str) -> str:
    return text[p.tokens[s.start].start: p.tokens[s.end - 1].end].lower()


def _skeleton(p: Parsed) -> list[str]:
    starts = {s.start: s for s in p.spans}
    out: list[str] = []
    i = 0
    while i < len(p.tokens):
        s = starts.get(i)
        if s is not None:
            out.append("<colour>" if s.dim == COLOUR else "<attribute>")  # dims compared per span below
            i = s.end
            continue
        w = p.tokens[i].low
        out.append("a" if w == "an" else w)
        i += 1
    return out


def _colour_problem(lex: Lexicon, old: Span, new: Span, old_text: str, new_text: str) -> str | None:
    if new.modifier and (new.base is None or new.modifier not in lex.base_modifiers[new.base]):
        return f"implausible colour {new_text!r}"
    if not (old.groups & new.groups):
        return None
    toggled = (old.modifier in lex.toggle and new.modifier == lex.toggle[old.modifier]) or \
        (old.modifier is None and new.modifier in lex.toggle)
    if old.base is not None and new.base == old.base and toggled:
        return None
    return f"{old_text!r} -> {new_text!r} stays in the same colour family"


def analyse(positive: str, candidate: str, lex: Lexicon | None = None, positive_parsed: Parsed | None = None
            ) -> Verdict:
    lex = lex or load_lexicon()
    raw = str(candidate).strip()
    text = fix_articles(match_surface(positive, clean_line(raw)))
    repaired = text != raw
    if not normalise(text):
        return Verdict(text, (), "empty", repaired)
    if normalise(text) == normalise(positive):
        return Verdict(text, (), "equals the positive", repaired)
    pp = positive_parsed or parse(positive, lex)
    cp = parse(text, lex)
    if _skeleton(pp) != _skeleton(cp):
        if (pp.head or "").lower() != (cp.head or "").lower():
            why = f"noun changed ({pp.head!r} -> {cp.head!r})"
        elif len(cp.spans) != len(pp.spans):
            why = f"{'adds' if len(cp.spans) > len(pp.spans) else 'drops'} an attribute"
        else:
            why = "changes words that are no attribute values"
        return Verdict(text, (), why, repaired)
    changes: list[Change] = []
    for k, (old, new) in enumerate(zip(pp.spans, cp.spans, strict=True)):
        old_text, new_text = _span_text(pp, old, positive), _span_text(cp, new, text)
        if old_text == new_text:
            continue
        others = [s for j, s in enumerate(pp.spans) if j != k and s.dim == old.dim]
        if new.dim != old.dim:  # an ambiguous word read in another dimension ("short": length or height)
            groups = in_dim(lex, old.dim, new_text)
            if not groups:
                return Verdict(text, tuple(changes), f"{old_text!r} -> {new_text!r} is another kind of attribute",
                               repaired)
            new = Span(new.start, new.end, old.dim, groups, new.noun)
        if old.dim == COLOUR:
            problem = _colour_problem(lex, old, new, old_text, new_text)
            clash = any(new.groups & s.groups for s in others) and new.groups != old.groups
        else:
            dim = lex.dims[old.dim]
            problem = None if not (new.groups & dim.blocked_by(old.groups)) else \
                f"{old_text!r} -> {new_text!r} is a synonym or an overlapping value"
            clash = any(new.groups & dim.blocked_by(s.groups) for s in others)
        if problem is None and clash:
            problem = f"{new_text!r} is already named in the expression"
        if problem is not None:
            return Verdict(text, tuple(changes), problem, repaired)
        changes.append(Change(old.dim, lex.family_of(old.dim), old_text, new_text))
    if not changes:
        return Verdict(text, (), "changes nothing but the wording", repaired)
    return Verdict(text, tuple(changes), None, repaired)
