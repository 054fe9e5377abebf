"""Find the attribute values of a referring expression: the spans a hard negative may change.

A span is one attribute value: a colour with its modifier ("light grey", "navy blue", "light-blue"),
a material, a pattern, a state, ... each in its dimension with the lexicon groups it is in, and the
noun it describes ("blue" in "the woman in a blue dress" describes the dress). A word counts as an
attribute only where it is used as one ("an orange" and "a glass of water" have none); a noun that is
also in the verb list is still a noun after an attribute ("A black can.", "a brown cover").
"""

from __future__ import annotations

from dataclasses import dataclass

from fgclip_core.annotate.lexicon import COLOUR, PRINT_PRESENCE, Lexicon, Token, load_lexicon, tokenize

MODIFIER = "colour_modifier"
_JOINERS = frozenset({",", "and", "or", "-", "/", "&"})


@dataclass(frozen=True)
class Span:
    start: int  # first token
    end: int  # one past the last token
    dim: str
    groups: frozenset[int]  # the groups of ``dim`` the value is in (colour: its families)
    noun: str = ""  # the noun it describes, lower case and singular
    modifier: str | None = None  # colour: the modifier's name (light, dark, bright)
    base: int | None = None  # colour: the family when the value is one basic colour word
    hyphen: bool = False  # colour written as one hyphenated token ("light-blue")


@dataclass(frozen=True)
class Parsed:
    tokens: list[Token]
    spans: list[Span]
    head: str | None  # the head noun of the first noun phrase (as written)


@dataclass(frozen=True)
class Slot:
    """One attribute token (the per-token view the phrase chunker uses)."""

    index: int
    category: str  # a dimension, or MODIFIER (the "light" of "light grey")
    group: int


def singular(word: str) -> str:
    w = word.lower()
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith(("ches", "shes", "sses", "xes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def _nounlike(tokens: list[Token], j: int, lex: Lexicon) -> bool:
    """tokens[j] can be a noun here: a content word, or a verb-list word that ends the phrase."""
    if j >= len(tokens):
        return False
    t = tokens[j]
    w = t.low
    if not t.is_word or w in lex.determiners:
        return False
    if not lex.is_function_word(w):
        return True
    nxt = tokens[j + 1] if j + 1 < len(tokens) else None
    if w in lex.prepositions and (nxt is None or not nxt.is_word):
        return True  # "with a pale pink inside": a preposition that ends the phrase is a noun
    if w not in lex.verbs or w in lex.prepositions or w in lex.conjunctions or w in lex.pronouns \
            or w in lex.copulas or w in lex.adverbs:
        return False
    return nxt is None or not nxt.is_word or nxt.low in lex.prepositions or nxt.low in lex.conjunctions \
        or nxt.low in lex.copulas


def _is_attr(lex: Lexicon, word: str) -> bool:
    return word in lex.words or word in lex.modifier_words


def _attributive(tokens: list[Token], start: int, i: int, lex: Lexicon, dim: str) -> bool:
    """True when the value tokens[start..i] is used as an attribute (not as the noun)."""
    prev = tokens[start - 1].low if start > 0 else ""
    if _nounlike(tokens, i + 1, lex):
        return True
    nxt = tokens[i + 1].low if i + 1 < len(tokens) else ""
    if nxt in _JOINERS and i + 2 < len(tokens):
        after = tokens[i + 2].low
        if _is_attr(lex, after) or (after in _JOINERS and i + 3 < len(tokens) and _is_attr(lex, tokens[i + 3].low)):
            return True
    if prev in lex.copulas:
        return True
    if dim == COLOUR and prev == "in":
        return True
    return dim == "material" and prev in ("of", "from")


def _colour_word(lex: Lexicon, word: str) -> bool:
    return word in lex.colour_words


def _colour_at(tokens: list[Token], i: int, lex: Lexicon) -> Span | None:
    """A colour value starting at tokens[i] (not yet checked for being attributive)."""
    w = tokens[i].low
    dim = lex.dims[COLOUR]
    if "-" in w and w not in lex.words:
        parts = w.split("-")
        mod = lex.modifier_words.get(parts[0])
        rest = parts[1:] if mod else parts
        if rest and all(_colour_word(lex, p) for p in rest):
            groups = frozenset().union(*(lex.words[p].groups for p in rest))
            base = next(iter(groups)) if len(rest) == 1 and rest[0] in dim.groups[min(groups)].words \
                and len(groups) == 1 else None
            return Span(i, i + 1, COLOUR, groups, modifier=mod, base=base, hyphen=True)
        return None
    mod = None
    j = i
    if w in lex.modifier_words and i + 1 < len(tokens) and _colour_word(lex, tokens[i + 1].low):
        mod, j = lex.modifier_words[w], i + 1
    k = j
    while k < len(tokens) and _colour_word(lex, tokens[k].low):
        k += 1
    if k == j:
        return None
    groups = frozenset().union(*(lex.words[t.low].groups for t in tokens[j:k]))
    base = None
    if k == j + 1 and len(groups) == 1:
        g = next(iter(groups))
        base = g if tokens[j].low in dim.groups[g].words else None
    return Span(i, k, COLOUR, groups, modifier=mod, base=base)


def _raw_spans(tokens: list[Token], lex: Lexicon) -> list[Span]:
    spans: list[Span] = []
    i, n = 0, len(tokens)
    while i < n:
        w = tokens[i].low
        span = _colour_at(tokens, i, lex) if (w in lex.modifier_words or "-" in w or w in lex.words) else None
        if span is None and w in lex.bigram_starts and i + 1 < n and f"{w} {tokens[i + 1].low}" in lex.words:
            e = lex.words[f"{w} {tokens[i + 1].low}"]
            span = Span(i, i + 2, e.category, e.groups)
        if span is None and w in lex.words and lex.words[w].category != COLOUR:
            e = lex.words[w]
            span = Span(i, i + 1, e.category, e.groups)
        if span is None and w in ("with", "without"):
            k = i + 1
            while k < n and tokens[k].low in ("a", "an", "the", "some", "its", "their", "his", "her"):
                k += 1
            if k < n and tokens[k].low in lex.print_nouns:
                spans.append(Span(i, i + 1, PRINT_PRESENCE, frozenset({0 if w == "with" else 1})))
            i += 1
            continue
        if span is not None and span.dim == COLOUR and span.end < n and \
                f"{tokens[span.end - 1].low} {tokens[span.end].low}" in lex.fixed_names:
            span = None  # "a golden retriever", "a glass of red wine": part of a name
        if span is not None and _attributive(tokens, span.start, span.end - 1, lex, span.dim):
            spans.append(span)
            i = span.end
        else:
            i += 1
    return spans


def _head(tokens: list[Token], taken: set[int], lex: Lexicon) -> str | None:
    head: str | None = None
    for i, tok in enumerate(tokens):
        w = tok.low
        if not tok.is_word:
            if head:
                break
            continue
        if i in taken or w in lex.determiners or w in lex.adverbs or w.isdigit():
            if head:
                break
            continue
        after_np_start = head is None and i > 0 and (i - 1 in taken or tokens[i - 1].low in lex.determiners)
        function = lex.is_function_word(w) and not (after_np_start and _nounlike(tokens, i, lex))
        if function or (head and (w.endswith("ing") or w.endswith("ed"))):
            if head:
                break
            continue
        head = tok.text
    return head


def _noun_after(tokens: list[Token], k: int, taken: set[int], lex: Lexicon) -> str | None:
    while k < len(tokens) and (k in taken or tokens[k].low in _JOINERS):
        k += 1
    if not _nounlike(tokens, k, lex):
        return None
    last = k
    while last + 1 < len(tokens) and last + 1 not in taken and not lex.is_function_word(tokens[last + 1].low) \
            and tokens[last + 1].low not in lex.determiners and not tokens[last + 1].low.endswith(("ing", "ed")):
        last += 1
    return singular(tokens[last].text)


def in_dim(lex: Lexicon, dim: str, word: str) -> frozenset[int]:
    return frozenset(gi for gi, g in enumerate(lex.dims[dim].groups) if word in g.words)


def parse(expression: str, lex: Lexicon | None = None) -> Parsed:
    lex = lex or load_lexicon()
    tokens = tokenize(expression)
    spans = _raw_spans(tokens, lex)
    taken = {i for s in spans for i in range(s.start, s.end)}
    head = _head(tokens, taken, lex)
    head_noun = singular(head) if head else ""
    out: list[Span] = []
    for s in spans:
        noun = head_noun if s.dim == PRINT_PRESENCE else (_noun_after(tokens, s.end, taken, lex) or head_noun)
        word = tokens[s.start].low
        if s.end == s.start + 1 and word in lex.by_noun:
            for dim, nouns in lex.by_noun[word].items():
                if noun in nouns:
                    s = Span(s.start, s.end, dim, in_dim(lex, dim, word), "", s.modifier, s.base, s.hyphen)
                    break
        if s.dim in lex.not_applicable.get(noun, ()):
            continue
        out.append(Span(s.start, s.end, s.dim, s.groups, noun, s.modifier, s.base, s.hyphen))
    return Parsed(tokens, out, head)


def find_slots(expression: str, lex: Lexicon | None = None) -> tuple[list[Token], list[Slot]]:
    """The attribute tokens of ``expression``, one :class:`Slot` per token."""
    lex = lex or load_lexicon()
    parsed = parse(expression, lex)
    slots: list[Slot] = []
    for s in parsed.spans:
        if s.dim == PRINT_PRESENCE:
            continue
        for i in range(s.start, s.end):
            if s.dim == COLOUR and s.modifier and i == s.start and not s.hyphen:
                slots.append(Slot(i, MODIFIER, 0))
            else:
                slots.append(Slot(i, s.dim, min(s.groups) if s.groups else -1))
    return parsed.tokens, slots


def head_noun(expression: str, lex: Lexicon | None = None) -> str | None:
    """The head noun of the first noun phrase (the word every negative must keep), or None."""
    return parse(expression, lex).head
