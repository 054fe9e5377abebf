"""Word lists (shipped as YAML data) and a small tokenizer shared by phrases and negatives.

``attributes.yaml`` holds the attribute categories (colour, material, size, count, pattern,
texture, shape, state); ``grammar.yaml`` the closed-class words a rule-based chunker needs.
Single-word colour names from matplotlib's CSS4/XKCD tables are recognised as colours (never used
as replacements), except the nouns listed under ``not_colours``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from fgclip_core.safe_yaml import load_yaml

CATEGORIES = ("colour", "material", "size", "count", "pattern", "texture", "shape", "state")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int

    @property
    def low(self) -> str:
        return self.text.lower()

    @property
    def is_word(self) -> bool:
        return self.text[0].isalnum()


def tokenize(text: str) -> list[Token]:
    return [Token(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]


@dataclass(frozen=True)
class AttributeEntry:
    category: str
    group: int  # index of the synonym group inside its category; -1 for recognised-only colours


@dataclass
class Lexicon:
    # category -> synonym groups; the first form of a group is the one written into negatives
    groups: dict[str, list[tuple[str, ...]]]
    colour_modifiers: list[tuple[str, ...]]
    words: dict[str, AttributeEntry] = field(default_factory=dict)
    modifier_words: dict[str, int] = field(default_factory=dict)
    determiners: frozenset[str] = frozenset()
    prepositions: frozenset[str] = frozenset()
    conjunctions: frozenset[str] = frozenset()
    pronouns: frozenset[str] = frozenset()
    copulas: frozenset[str] = frozenset()
    verbs: frozenset[str] = frozenset()
    adverbs: frozenset[str] = frozenset()
    non_objects: frozenset[str] = frozenset()

    def attribute(self, word: str) -> AttributeEntry | None:
        return self.words.get(word.lower())

    def is_function_word(self, word: str) -> bool:
        w = word.lower()
        return (w in self.prepositions or w in self.conjunctions or w in self.pronouns or w in self.copulas
                or w in self.verbs or w in self.adverbs or not word[0].isalnum())


def _groups(raw: list, where: str) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for item in raw:
        forms = (item,) if isinstance(item, str) else tuple(item)
        if not forms or not all(isinstance(f, str) and f for f in forms):
            raise ValueError(f"attributes.yaml: bad entry {item!r} in {where}")
        out.append(tuple(f.lower() for f in forms))
    return out


def _extra_colour_names(exclude: set[str]) -> set[str]:
    from matplotlib import colors

    names = set()
    for table in (colors.CSS4_COLORS, colors.XKCD_COLORS):
        for name in table:
            name = name.removeprefix("xkcd:").lower()
            if name.isalpha() and name not in exclude:
                names.add(name)
    return names


@lru_cache(maxsize=1)
def load_lexicon() -> Lexicon:
    base = resources.files("fgclip_core.annotate") / "lexicons"
    attrs = load_yaml((base / "attributes.yaml").read_text(), "attributes.yaml")
    grammar = load_yaml((base / "grammar.yaml").read_text(), "grammar.yaml")
    groups = {c: _groups(attrs[c], c) for c in CATEGORIES}
    lex = Lexicon(groups=groups, colour_modifiers=_groups(attrs["colour_modifiers"], "colour_modifiers"))
    for cat in CATEGORIES:
        for gi, forms in enumerate(groups[cat]):
            for f in forms:
                if f in lex.words and lex.words[f].category != cat:
                    raise ValueError(f"attributes.yaml: {f!r} is in both {lex.words[f].category} and {cat}")
                lex.words[f] = AttributeEntry(cat, gi)
    for name in sorted(_extra_colour_names(set(attrs.get("not_colours") or []))):
        lex.words.setdefault(name, AttributeEntry("colour", -1))
    for gi, forms in enumerate(lex.colour_modifiers):
        for f in forms:
            lex.modifier_words[f] = gi
    for key in ("determiners", "prepositions", "conjunctions", "pronouns", "copulas", "verbs", "adverbs", "non_objects"):
        words = grammar[key]
        bad = [w for w in words if not isinstance(w, str)]
        if bad:  # YAML reads bare on/off/no/yes as booleans: such words must be quoted
            raise ValueError(f"grammar.yaml: {key} has non-string entries {bad!r} (quote them)")
        setattr(lex, key, frozenset(w.lower() for w in words))
    return lex
