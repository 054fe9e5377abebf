"""Rule-based hard negatives: parsing, exclusive-group changes, difficulty levels, plausibility, surface
form, and the repair shared by every backend."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from fgclip_core.annotate.attribute_slots import parse
from fgclip_core.annotate.config import NegativesConfig, load_annotate_config
from fgclip_core.annotate.lexicon import load_lexicon
from fgclip_core.annotate.negative_checks import analyse
from fgclip_core.annotate.negatives import (
    RuleNegatives,
    find_slots,
    head_noun,
    normalise,
    parse_difficulty,
    quotas,
    repair_negatives,
)
from fgclip_core.annotate.plausibility import Plausibility
from fgclip_core.cli import cli
from fgclip_core.config import ConfigError

EXPRESSIONS = Path(__file__).parents[1] / "data" / "referring_expressions.txt"


def load_expressions() -> list[str]:
    return [ln.strip() for ln in EXPRESSIONS.read_text().splitlines() if ln.strip()]


def changes(positive: str, negative: str) -> int:
    v = analyse(positive, negative)
    assert v.problem is None, (positive, negative, v.problem)
    return len(v.changes)


# -- the issue's regressions ---------------------------------------------------------------------

@pytest.mark.parametrize("expr", ["ceramic plate with a black rim and a white surface",
                                  "a bicycle with a black metal frame and black metal wheels",
                                  "A black can.", "a brown cover"])
def test_expressions_that_got_no_negative_get_ten_single_changes(expr):
    negs = RuleNegatives().one(expr)
    assert len(negs) == 10 and len({normalise(n) for n in negs}) == 10, negs
    assert all(changes(expr, n) == 1 for n in negs)


def test_one_of_two_equal_values_changes_alone():
    """The old _same_meaning rejected every single change of a category with two slots."""
    expr = "a bicycle with a black metal frame and black metal wheels"
    negs = RuleNegatives(n=60).one(expr)
    assert any(n.startswith("a bicycle with a black metal frame and ") and "black metal wheels" not in n for n in negs)
    assert any("and black metal wheels" in n and not n.startswith("a bicycle with a black metal frame") for n in negs)
    two = RuleNegatives(n=60).one("a black and white dog")
    assert any(n.startswith("a black and ") for n in two) and any(n.endswith(" and white dog") for n in two)


def test_nouns_in_the_verb_list_are_nouns_after_an_attribute():
    assert head_noun("A black can.") == "can" and head_noun("a brown cover") == "cover"
    assert [s.category for s in find_slots("A black can.")[1]] == ["colour"]
    assert head_noun("the cat can jump") == "cat"
    assert [s.dim for s in parse("green leaves cover the ground").spans] == ["colour"]


def test_hyponyms_synonyms_and_shades_are_never_negatives():
    lex = load_lexicon()
    forbidden = {"grey metal rail": {"iron", "steel", "copper", "aluminum", "chrome", "metallic", "brass"},
                 "a fabric sofa": {"silk", "cotton", "wool", "linen", "velvet", "polyester", "lace", "cloth"},
                 "a brown bag": {"khaki", "beige", "tan", "light beige", "bronze"},
                 "a light brown box": {"light beige", "beige", "brown", "tan"},
                 "a wicker basket": {"rattan", "straw", "cane", "bamboo"},
                 "a navy jacket": {"blue", "light blue", "dark blue"},
                 "a plaid shirt": {"checkered", "tartan"}}
    for expr, bad in forbidden.items():
        words = set(expr.split())
        for n in RuleNegatives(n=50).one(expr):
            new = " ".join(w for w in n.split() if w not in words or w in ("light", "dark"))
            assert new not in bad and not (set(n.split()) - words) & bad, (expr, n)
    assert lex.attribute("khaki").groups & lex.attribute("brown").groups  # the lexicon says why


def test_light_dark_toggle_and_no_hypernym():
    grey = RuleNegatives(n=60).one("a grey cat")
    assert {"a dark grey cat", "a light grey cat"} <= set(grey) and "a gray cat" not in grey
    light = RuleNegatives(n=60).one("a light blue shirt")
    assert "a dark blue shirt" in light
    assert "a blue shirt" not in light  # dropping the modifier leaves a true description
    assert not any(n.startswith(("a black", "a white")) and n.split()[1] in ("light", "dark") for n in light)


def test_no_implausible_modifier_and_no_repeated_colour():
    bad = ["pastel black", "light navy", "dark gold", "neon brown", "light silver", "light black", "dark white",
           "bright brown", "light white", "bright black"]
    gen = RuleNegatives(n=30)
    for expr in ["a pastel pink cake box", "a light grey plastic pipe", "a neon green sign", "a navy hat",
                 "a grey, red and yellow kite", "a gold watch", "a silver car", "a bright red apple"]:
        for n in gen.one(expr):
            assert not any(b in n.lower() for b in bad), (expr, n)
    for n in RuleNegatives(n=50).one("a grey, red and yellow kite"):
        colours = [w.strip(",") for w in n.split()[1:-1] if w not in ("and", "light", "dark", "bright")]
        assert len(colours) == len(set(colours)) == 3, n


def test_never_a_value_named_elsewhere():
    for n in RuleNegatives(n=50).one("a wooden box on a glass table"):
        assert n.count("glass") + n.count("wooden") <= 2 and "glass box" not in n and "wooden table" not in n, n


def test_surface_form_is_kept():
    for expr in ["A black can.", "The white dog.", "A Red Car On The Street", "THE RED TRUCK", "a red car!"]:
        end = expr[-1] if expr[-1] in ".!" else ""
        for n in RuleNegatives().one(expr):
            assert n[0] == expr[0] and (n.endswith(end) if end else n[-1].isalpha()), (expr, n)
            assert normalise(n) != normalise(expr)
    assert all(n.isupper() for n in RuleNegatives().one("THE RED TRUCK"))
    assert all(n.split()[1][0].isupper() for n in RuleNegatives().one("A Red Car On The Street"))


# -- parsing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "noun"), [
    ("the man wearing a green jacket", "man"),
    ("a glass of water", "glass"),
    ("an orange", "orange"),
    ("two black cats on the sofa", "cats"),
    ("the guy on the right", "guy"),
])
def test_head_noun(expr, noun):
    assert head_noun(expr) == noun


def test_nouns_used_as_nouns_are_not_attributes():
    assert find_slots("an orange")[1] == []
    assert find_slots("a glass of water")[1] == []
    assert [s.category for s in find_slots("the orange traffic cone")[1]] == ["colour"]
    assert [s.category for s in find_slots("a table made of glass")[1]] == ["material"]
    assert parse("a golden retriever").spans == []  # the colour word is part of a name


def test_spans_know_their_noun_and_dimension():
    p = parse("the woman in a light blue dress with a leather belt")
    assert [(s.dim, s.noun, s.modifier) for s in p.spans] == [("colour", "dress", "light"), ("material", "belt", None)]
    assert [s.dim for s in parse("a short man").spans] == ["height"]
    assert [s.dim for s in parse("short hair").spans] == ["length"]
    assert parse("a clear sky").spans == []  # transparency does not apply to a sky
    assert [s.dim for s in parse("a shirt with a logo").spans] == ["print_presence"]
    assert [s.dim for s in parse("a transparent plastic cup").spans] == ["transparency", "material"]


def test_rules_on_real_expressions():
    exprs = load_expressions()
    assert len({normalise(e) for e in exprs}) == len(exprs)
    gen = RuleNegatives(n=10)
    with_attr = [e for e in exprs if parse(e).spans]
    assert 150 <= len(with_attr) < len(exprs)
    for e in exprs:
        negs = gen.one(e)
        noun = head_noun(e)
        assert len({normalise(n) for n in negs}) == len(negs), (e, negs)
        assert normalise(e) not in {normalise(n) for n in negs}, e
        if noun is not None:
            assert all(noun.lower() in n.lower().split() for n in negs), (e, noun, negs)
        if e not in with_attr:
            assert negs == [], e
        assert all(changes(e, n) == 1 for n in negs)


# -- difficulty levels -------------------------------------------------------------------------

def test_difficulty_parsing_and_quotas():
    assert parse_difficulty("hard") == (("hard", 1.0),)
    assert parse_difficulty("medium, hard") == (("hard", 1.0), ("medium", 1.0))
    assert parse_difficulty("hard:3,trivial:1") == (("hard", 3.0), ("trivial", 1.0))
    for bad in ["", "brutal", "hard:x", "hard:0"]:
        with pytest.raises(ValueError):
            parse_difficulty(bad)
    assert quotas(10, parse_difficulty("hard,medium,easy")) == [("hard", 4), ("medium", 3), ("easy", 3)]
    assert quotas(10, parse_difficulty("hard:3,trivial:1")) == [("hard", 8), ("trivial", 2)]


def test_config_difficulty_default_hard_and_validated():
    assert NegativesConfig().difficulty == "hard" and load_annotate_config(None).negatives.difficulty == "hard"
    assert load_annotate_config(None, ["negatives.difficulty=trivial:1,hard:3"]).negatives.difficulty == "hard:3,trivial"
    with pytest.raises(ConfigError, match="unknown difficulty"):
        load_annotate_config(None, ["negatives.difficulty=brutal"])


@pytest.mark.parametrize(("level", "k"), [("hard", 1), ("medium", 2), ("easy", 3)])
def test_each_level_changes_its_number_of_attributes(level, k):
    gen = RuleNegatives(difficulty=level)
    expr = "a small light grey plastic pipe with a round metal cap"
    res = gen.result(expr)
    assert len(res.negatives) == 10 and res.levels == [level] * 10
    assert all(changes(expr, n) == k for n in res.negatives)
    assert gen.provenance()["difficulty"] == level


def test_levels_that_cannot_be_made_say_why():
    res = RuleNegatives(difficulty="medium").result("a red car")
    assert res.negatives == [] and "needs 2 changeable attributes, found 1" in res.note
    assert "no attribute found" in RuleNegatives().result("the man on the left").note
    assert RuleNegatives().result("a red car").note is None


def test_trivial_takes_other_objects_of_the_record_in_the_positive_surface_form():
    ctx = ["a wooden bench", "the red car", "a tall man", "the dog", "the cars"]
    res = RuleNegatives(difficulty="trivial").result("The red car.", ctx)
    assert sorted(res.negatives) == sorted(["A wooden bench.", "A tall man.", "The dog."])  # not another car
    assert res.levels == ["trivial"] * 3 and "3 other objects" in res.note


def test_a_mix_fills_each_quota_and_tops_up_from_the_other_level():
    ctx = ["a wooden bench", "a tall man", "the dog"]
    res = RuleNegatives(difficulty="hard,trivial").result("a red car", ctx)
    assert Counter(res.levels) == {"hard": 7, "trivial": 3} and len(res.negatives) == 10
    res = RuleNegatives(difficulty="hard:1,trivial:1").result("a red car", ctx * 3)
    assert Counter(res.levels) == {"hard": 7, "trivial": 3}


# -- plausibility ----------------------------------------------------------------------------

def test_plausibility_learnt_from_captions_per_noun():
    captions = ["A wooden table stands by the wall. Another wooden table is near it."] * 20 + \
        ["A glass table in the hall.", "The metal chair is next to a plastic chair."]
    p = Plausibility.learn(captions)
    lex = load_lexicon()
    idx = lex.dims["material"].index
    w = p.weights("table", "material")
    assert w[idx["wooden"]] > w[idx["glass"]] > w[idx["paper"]]
    assert p.source == "captions" and p.counts[("table", "material")][idx["wooden"]] == 40
    base = Plausibility().weights("table", "material")
    assert w[idx["wooden"]] / w[idx["stone"]] > base[idx["wooden"]] / base[idx["stone"]]


def test_learnt_counts_change_which_replacements_come_first():
    def first_three(gen: RuleNegatives) -> Counter[str]:
        got: Counter[str] = Counter()
        for seed in range(40):
            gen.seed = seed
            got.update(n.split()[1] for n in gen.one("a plastic table")[:3])
        return got

    plain = first_three(RuleNegatives())
    learnt = RuleNegatives()
    learnt.learn(["a brick table"] * 50)
    with_counts = first_three(learnt)
    assert with_counts["brick"] > plain["brick"] + 10
    assert learnt.provenance()["plausibility"] == "captions"


def test_lexicon_priors_prefer_typical_materials():
    got: Counter[str] = Counter()
    for seed in range(30):
        got.update(n.split()[2] for n in RuleNegatives(seed=seed).one("a white cotton towel") if len(n.split()) == 4)
    typical = sum(got[w] for w in ("silk", "wool", "linen", "polyester", "leather", "velvet"))
    odd = sum(got[w] for w in ("glass", "ceramic", "stone", "brick", "paper", "metal", "rubber"))
    assert typical > 3 * odd, got


# -- determinism, repair, CLI ------------------------------------------------------------------

def test_articles_are_fixed_and_deterministic():
    negs = RuleNegatives(n=30, seed=3).one("an orange ball")
    assert negs == RuleNegatives(n=30, seed=3).one("an orange ball")
    assert negs != RuleNegatives(n=30, seed=4).one("an orange ball")
    for n in negs:
        art, colour = n.split()[:2]
        assert art == ("an" if colour[0] in "aeiou" else "a"), n


def test_repair_strips_numbering_and_keeps_the_positive_surface_form():
    raw = ["1. a red car", "2) A RED CAR.", "- a blue car", "• 'a green car'", "3. a blue truck",
           "a small car", "", "  ", "the red car parked", "10. a yellow car"]
    out = repair_negatives("a small car.", raw, 10, "car")
    assert out == ["a red car.", "a blue car.", "a green car.", "the red car parked.", "a yellow car."]
    assert repair_negatives("A small car", raw, 2, "car") == ["A red car", "A blue car"]


def test_cli_negatives_rules_with_levels_and_report(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a light grey plastic pipe\nthe man on the left\n\na red car\nthe open laptop\n")
    out = tmp_path / "sub" / "out.jsonl"
    res = CliRunner().invoke(cli, ["annotate", "negatives", "--expressions", str(src), "--out", str(out), "-n", "10",
                                   "--report"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["expression"] for r in rows] == ["a light grey plastic pipe", "the man on the left", "a red car",
                                               "the open laptop"]
    assert len(rows[0]["negatives"]) == 10 and rows[1]["negatives"] == [] and len(rows[2]["negatives"]) == 10
    assert set(rows[0]) == {"expression", "negatives", "levels", "note"} and rows[0]["levels"] == ["hard"] * 10
    assert "no attribute found" in rows[1]["note"] and "openness" in rows[3]["note"]
    for section in ["attributes changed per negative", "attribute families changed", "top 15 replacements",
                    "why 2 expressions have fewer than 10"]:
        assert section in res.output, res.output
    # trivial draws from the block (record) of the expression
    res = CliRunner().invoke(cli, ["annotate", "negatives", "--expressions", str(src), "--out", str(out),
                                   "--difficulty", "trivial"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert rows[0]["negatives"] == ["the man on the left"] and rows[2]["negatives"] == ["the open laptop"]


def test_cli_report_alone_and_bad_difficulty(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a red car\n")
    res = CliRunner().invoke(cli, ["annotate", "negatives", "--expressions", str(src), "--report"])
    assert res.exit_code == 0 and "colour" in res.output
    res = CliRunner().invoke(cli, ["annotate", "negatives", "--expressions", str(src)])
    assert res.exit_code != 0 and "--out" in res.output
    res = CliRunner().invoke(cli, ["annotate", "negatives", "--expressions", str(src), "--report",
                                   "--difficulty", "brutal"])
    assert res.exit_code != 0 and "unknown difficulty" in res.output


def _attribute_words() -> list[str]:
    lex = load_lexicon()
    return sorted({g.write for d in lex.dims.values() if d.name not in ("print_presence", "count")
                   for g in d.groups if g.write})


NOUNS = ["pipe", "car", "dog", "table", "shirt", "bottle", "chair", "umbrella", "apple", "hat"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["a", "the", "an", "this", ""]), st.lists(st.sampled_from(_attribute_words()), min_size=1,
                                                                  max_size=3, unique=True),
       st.sampled_from(NOUNS), st.sampled_from(["", " on the left", " next to the door"]))
def test_rule_negatives_properties(det, attrs, noun, tail):
    expr = " ".join(w for w in [det, *attrs, noun] if w) + tail
    parsed = parse(expr)
    negs = RuleNegatives(n=10).one(expr)
    assert len({normalise(n) for n in negs}) == len(negs)
    assert normalise(expr) not in {normalise(n) for n in negs}
    for n in negs:
        v = analyse(expr, n, positive_parsed=parsed)
        assert v.problem is None and len(v.changes) == 1, (expr, n, v)
        assert n.split()[-len(tail.split()) - 1 if tail else -1] == noun


def test_lexicon_entries_are_validated_and_groups_are_consistent():
    from fgclip_core.annotate.lexicon import _dimension

    with pytest.raises(ValueError, match="weight"):
        _dimension("d", "f", [{"words": ["a"], "weight": 0}], "x.yaml")
    with pytest.raises(ValueError, match="unknown group"):
        _dimension("d", "f", [{"words": ["a"], "overlaps": ["b"]}], "x.yaml")
    with pytest.raises(ValueError, match="bad entry"):
        _dimension("d", "f", [{"words": [True]}], "x.yaml")
    lex = load_lexicon()
    for dim in lex.dims.values():
        for i, blocked in enumerate(dim.blocked):
            assert i in blocked and all(i in dim.blocked[j] for j in blocked), dim.name  # overlaps are symmetric
    colour = lex.dims["colour"]
    assert len(colour.groups) == 11 and lex.base_modifiers[colour.index["black"]] == frozenset()
    assert "light" not in lex.base_modifiers[colour.index["white"]]
    assert lex.attribute("navy").groups == frozenset({colour.index["blue"]})


def test_cli_contexts_are_blocks_and_long_blocks_a_window():
    from fgclip_core.cli.annotate_cmd import MAX_RECORD_LINES, _contexts

    assert _contexts([["a", "b"], ["c"]]) == [("b",), ("a",), ()]
    long = [f"thing {i}" for i in range(10 * MAX_RECORD_LINES)]
    ctx = _contexts([long])
    assert len(ctx) == len(long) and max(len(c) for c in ctx) <= MAX_RECORD_LINES
    assert "thing 499" in ctx[500] and "thing 0" not in ctx[500]
