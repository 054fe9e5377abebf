"""Attribute lexicons (shipped as YAML data) and a small tokenizer shared by phrases and negatives.

An attribute word belongs to a *dimension* (colour, material, pattern, openness, ...) reported under
an attribute *family* (colour, material, pattern, state, ...). A dimension is a list of exclusive
groups; a word is in one or more groups ("teal" is in blue and green), and a group may overlap others
("plaid" and "checkered"). A hard negative replaces a value by a group that the old value's groups
neither are nor overlap, so a change always contradicts: never a synonym or a hyponym.

- ``colours.yaml``: the basic colour families (the only colours written), the modifiers each allows,
  the light/dark toggle, and shades (recognised with every family they overlap, never written).
  Single-word CSS4/XKCD colour names from matplotlib are recognised too, placed by RGB.
- ``materials.yaml`` (material) and ``attributes.yaml`` (pattern, transparency, print, finish,
  texture, size, count, shape, state): the groups of each dimension.
- ``plausibility.yaml``: per-noun priors, the fallback when the data has no counts for a noun.
- ``grammar.yaml``: the closed-class words a rule-based chunker needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from fgclip_core.safe_yaml import load_yaml

COLOUR = "colour"
PRINT_PRESENCE = "print_presence"  # "with text" / "without text"
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    start: int
    end: int
    low: str  # text.lower()

    @property
    def is_word(self) -> bool:
        return self.text[0].isalnum()


def tokenize(text: str) -> list[Token]:
    return [Token(m.group(0), m.start(), m.end(), m.group(0).lower()) for m in _TOKEN.finditer(text)]


@dataclass(frozen=True)
class Group:
    name: str
    words: tuple[str, ...]
    write: str | None  # the form written into negatives; None: recognised only
    weight: float  # lexicon prior


@dataclass
class Dimension:
    name: str
    family: str  # the attribute family it is reported under
    groups: list[Group]
    blocked: list[frozenset[int]]  # per group: itself and every group it overlaps
    index: dict[str, int]  # group name -> index

    def blocked_by(self, groups: frozenset[int]) -> frozenset[int]:
        out: set[int] = set()
        for g in groups:
            out |= self.blocked[g]
        return frozenset(out)


@dataclass(frozen=True)
class AttributeEntry:
    category: str  # the dimension
    groups: frozenset[int]  # the groups of that dimension the word is in
    family: str

    @property
    def group(self) -> int:
        return min(self.groups)


@dataclass
class Lexicon:
    dims: dict[str, Dimension]
    words: dict[str, AttributeEntry] = field(default_factory=dict)
    bigram_starts: frozenset[str] = frozenset()  # first words of two-word attribute values
    modifier_words: dict[str, str] = field(default_factory=dict)  # colour modifier word -> modifier name
    base_modifiers: dict[int, frozenset[str]] = field(default_factory=dict)  # colour family -> allowed names
    toggle: dict[str, str] = field(default_factory=dict)
    by_noun: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    not_applicable: dict[str, frozenset[str]] = field(default_factory=dict)  # noun -> dimensions
    print_nouns: frozenset[str] = frozenset()
    fixed_names: frozenset[str] = frozenset()  # "golden retriever": the colour word is part of a name
    priors: dict[tuple[str, str], frozenset[int]] = field(default_factory=dict)  # (noun, dim) -> typical groups
    typical_weight: float = 3.0
    determiners: frozenset[str] = frozenset()
    prepositions: frozenset[str] = frozenset()
    conjunctions: frozenset[str] = frozenset()
    pronouns: frozenset[str] = frozenset()
    copulas: frozenset[str] = frozenset()
    verbs: frozenset[str] = frozenset()
    adverbs: frozenset[str] = frozenset()
    non_objects: frozenset[str] = frozenset()
    function_words: frozenset[str] = frozenset()  # prepositions, conjunctions, pronouns, copulas, verbs, adverbs
    colour_words: frozenset[str] = frozenset()

    @property
    def groups(self) -> dict[str, list[tuple[str, ...]]]:
        """Dimension -> the words of each group (the attribute vocabulary, e.g. for tiny test models)."""
        return {name: [g.words for g in d.groups] for name, d in self.dims.items()}

    @property
    def colour_modifiers(self) -> list[tuple[str, ...]]:
        names = sorted(set(self.modifier_words.values()))
        return [tuple(w for w, n in self.modifier_words.items() if n == name) for name in names]

    def attribute(self, word: str) -> AttributeEntry | None:
        return self.words.get(word.lower())

    def is_function_word(self, word: str) -> bool:
        return word.lower() in self.function_words or not word[0].isalnum()

    def family_of(self, dim: str) -> str:
        return self.dims[dim].family


def _bad(where: str, what: Any) -> ValueError:
    return ValueError(f"lexicons/{where}: bad entry {what!r}")


def _words(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(w, str) and w.strip() for w in raw):
        raise _bad(where, raw)  # YAML reads bare on/off/no/yes as booleans: such words must be quoted
    return tuple(" ".join(w.lower().split()) for w in raw)


def _weight(spec: dict, where: str) -> float:
    w = spec.get("weight", 1.0)
    if not isinstance(w, (int, float)) or isinstance(w, bool) or not w > 0:
        raise ValueError(f"lexicons/{where}: weight must be a number > 0, got {w!r}")
    return float(w)


def _dimension(name: str, family: str, raw: list, where: str) -> Dimension:
    groups: list[Group] = []
    overlaps: list[Any] = []
    excepts: list[set[str]] = []
    for item in raw:
        spec = {"words": item} if isinstance(item, list) else item
        if not isinstance(spec, dict) or set(spec) - {"words", "name", "write", "weight", "overlaps", "except"}:
            raise _bad(where, item)
        words = _words(spec.get("words"), where)
        write = words[0] if spec.get("write", True) is not False else None
        groups.append(Group(str(spec.get("name", words[0])), words, write, _weight(spec, where)))
        overlaps.append(spec.get("overlaps") or [])
        excepts.append(set(spec.get("except") or []))
    index = {g.name: i for i, g in enumerate(groups)}
    for g in groups:  # overlaps may name a group by any of its words
        for w in g.words:
            index.setdefault(w, index[g.name])
    pairs = [set() for _ in groups]
    for i, ov in enumerate(overlaps):
        names = [g.name for g in groups if g.name not in excepts[i]] if ov == "all" else ov
        for other in names:
            if other not in index:
                raise ValueError(f"lexicons/{where}: {groups[i].name!r} overlaps unknown group {other!r}")
            j = index[other]
            if j != i:
                pairs[i].add(j)
                pairs[j].add(i)
    blocked = [frozenset({i, *pairs[i]}) for i in range(len(groups))]
    return Dimension(name, family, groups, blocked, index)


def _add_word(lex: Lexicon, word: str, entry: AttributeEntry, where: str, ambiguous: set[str]) -> None:
    old = lex.words.get(word)
    if old is not None and old.category != entry.category:
        if word in ambiguous:  # read in its first dimension; by_noun moves it
            return
        raise ValueError(f"lexicons/{where}: {word!r} is in both {old.category} and {entry.category}")
    lex.words[word] = entry if old is None else AttributeEntry(entry.category, old.groups | entry.groups, entry.family)


_HUES = ((0, "red"), (15, "orange"), (42, "yellow"), (70, "green"), (170, "blue"), (255, "purple"),
         (290, "pink"), (345, "red"))


def _hue_family(h: float) -> str:
    return [name for start, name in _HUES if h >= start][-1]


def _nearest_families(rgb: tuple[float, float, float], index: dict[str, int]) -> frozenset[int]:
    """The basic colour families a colour name may be read as (boundaries count for both sides)."""
    import colorsys

    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    h *= 360
    fams: set[str] = set()
    if v < 0.25 or (v < 0.35 and s < 0.4):
        fams.add("black")
    if s < 0.2:
        fams.add("white" if v > 0.85 else "grey")
        if 0.6 < v <= 0.85 or v > 0.92:
            fams.add("grey" if v > 0.85 else "white")
    if s >= 0.12 and v >= 0.2:
        for dh in (-12, 0, 12):
            fams.add(_hue_family((h + dh) % 360))
        if 5 <= h <= 55 and (v < 0.75 or s < 0.45):
            fams.add("brown")
        if s < 0.3:
            fams.add("grey")
        if (h >= 330 or h < 20) and (s < 0.55 and v > 0.7):
            fams.add("pink")
        if v > 0.9 and s < 0.3:
            fams.add("white")
    return frozenset(index[f] for f in fams)


def _colours(lex: Lexicon, raw: dict, ambiguous: set[str]) -> None:
    fam_raw = raw["families"]
    groups = [Group(name, _words(spec.get("words", [name]), "colours.yaml"), name, _weight(spec, "colours.yaml"))
              for name, spec in fam_raw.items()]
    dim = Dimension(COLOUR, COLOUR, groups, [frozenset({i}) for i in range(len(groups))],
                    {g.name: i for i, g in enumerate(groups)})
    lex.dims[COLOUR] = dim
    mods = raw["modifiers"]
    for name, words in mods.items():
        for w in _words(words, "colours.yaml"):
            lex.modifier_words[w] = name
    lex.toggle = {str(k): str(v) for k, v in (raw.get("toggle") or {}).items()}
    for i, (name, spec) in enumerate(fam_raw.items()):
        allowed = frozenset(spec.get("modifiers") or [])
        if allowed - set(mods):
            raise ValueError(f"lexicons/colours.yaml: {name!r} allows unknown modifiers {sorted(allowed - set(mods))}")
        lex.base_modifiers[i] = allowed
        for w in groups[i].words:
            _add_word(lex, w, AttributeEntry(COLOUR, frozenset({i}), COLOUR), "colours.yaml", ambiguous)
    for shade, fams in (raw.get("shades") or {}).items():
        bad = [f for f in fams if f not in dim.index]
        if bad:
            raise ValueError(f"lexicons/colours.yaml: shade {shade!r} names unknown families {bad}")
        _add_word(lex, str(shade), AttributeEntry(COLOUR, frozenset(dim.index[f] for f in fams), COLOUR),
                  "colours.yaml", ambiguous)
    from matplotlib import colors

    skip = set(raw.get("not_colours") or [])
    for table in (colors.CSS4_COLORS, colors.XKCD_COLORS):
        for name, hexcode in table.items():
            name = name.removeprefix("xkcd:").lower()
            if name.isalpha() and name not in skip and name not in lex.words and name not in lex.modifier_words:
                rgb = tuple(255 * c for c in colors.to_rgb(hexcode))
                lex.words[name] = AttributeEntry(COLOUR, _nearest_families(rgb, dim.index), COLOUR)  # type: ignore[arg-type]


def _grammar(lex: Lexicon, grammar: dict) -> None:
    for key in ("determiners", "prepositions", "conjunctions", "pronouns", "copulas", "verbs", "adverbs", "non_objects"):
        words = grammar[key]
        bad = [w for w in words if not isinstance(w, str)]
        if bad:  # YAML reads bare on/off/no/yes as booleans: such words must be quoted
            raise ValueError(f"grammar.yaml: {key} has non-string entries {bad!r} (quote them)")
        setattr(lex, key, frozenset(w.lower() for w in words))
    lex.function_words = lex.prepositions | lex.conjunctions | lex.pronouns | lex.copulas | lex.verbs | lex.adverbs


@lru_cache(maxsize=1)
def load_lexicon() -> Lexicon:
    base = resources.files("fgclip_core.annotate") / "lexicons"

    def read(name: str) -> dict:
        return load_yaml((base / name).read_text(), f"lexicons/{name}")

    attrs, materials, colours, plaus = read("attributes.yaml"), read("materials.yaml"), read("colours.yaml"), \
        read("plausibility.yaml")
    special = {"print_nouns", "by_noun", "not_applicable"}
    lex = Lexicon(dims={})
    ambiguous = set(attrs.get("by_noun") or {})
    for source, name in ((materials, "materials.yaml"), (attrs, "attributes.yaml")):
        for family, dims in source.items():
            if family in special:
                continue
            for dname, raw in dims.items():
                if dname in lex.dims:
                    raise ValueError(f"lexicons/{name}: dimension {dname!r} defined twice")
                dim = lex.dims[dname] = _dimension(dname, family, raw, name)
                for gi, g in enumerate(dim.groups):
                    for w in g.words:
                        _add_word(lex, w, AttributeEntry(dname, frozenset({gi}), family), name, ambiguous)
    _colours(lex, colours, ambiguous)
    lex.bigram_starts = frozenset(w.split()[0] for w in lex.words if " " in w)
    lex.print_nouns = frozenset(attrs.get("print_nouns") or [])
    # "with a logo" -> "without a logo": read on the preposition, so "with" is no attribute word
    lex.dims[PRINT_PRESENCE] = _dimension(PRINT_PRESENCE, "print", [["with"], ["without"]], "attributes.yaml")
    for word, dims in (attrs.get("by_noun") or {}).items():
        lex.by_noun[word] = {d: frozenset(nouns or []) for d, nouns in dims.items()}
        for d in dims:
            if d not in lex.dims:
                raise ValueError(f"lexicons/attributes.yaml: by_noun {word!r} names unknown dimension {d!r}")
    na: dict[str, set[str]] = {}
    for d, nouns in (attrs.get("not_applicable") or {}).items():
        for n in nouns:
            na.setdefault(n, set()).add(d)
    lex.not_applicable = {n: frozenset(ds) for n, ds in na.items()}
    lex.typical_weight = float(plaus.get("typical_weight", 3.0))
    entries = [(cls.get("nouns") or [], {d: v for d, v in cls.items() if d != "nouns"}, f"classes.{name}")
               for name, cls in (plaus.get("classes") or {}).items()]
    entries += [([noun], dims, f"nouns.{noun}") for noun, dims in (plaus.get("nouns") or {}).items()]
    for nouns, dims, where in entries:
        for d, names in dims.items():
            dim = lex.dims.get(d)
            bad = [n for n in names if dim is None or n not in dim.index]
            if bad:
                raise ValueError(f"lexicons/plausibility.yaml: {where}.{d} names unknown groups {bad}")
            for noun in nouns:
                key = (noun, d)
                lex.priors[key] = lex.priors.get(key, frozenset()) | frozenset(dim.index[n] for n in names)
    lex.fixed_names = frozenset(" ".join(n.lower().split()) for n in colours.get("names") or [])
    _grammar(lex, read("grammar.yaml"))
    lex.colour_words = frozenset(w for w, e in lex.words.items() if e.category == COLOUR)
    return lex
