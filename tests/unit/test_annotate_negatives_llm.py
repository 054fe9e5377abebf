"""LLM negatives get the rule negatives' checks: surface repaired, invalid ones replaced by rules, counted;
and the pipeline's assignment passes records as context and writes levels into provenance."""

from __future__ import annotations

from collections import Counter

from fgclip_core.annotate.backends.openai_compat import JobResult
from fgclip_core.annotate.config import EndpointConfig, NegativesConfig
from fgclip_core.annotate.llm_negatives import LLMNegatives
from fgclip_core.annotate.negative_checks import analyse
from fgclip_core.annotate.negative_report import build_report
from fgclip_core.annotate.negatives import RuleNegatives
from fgclip_core.annotate.pipeline import assign_negatives
from fgclip_core.data.records import Region


class FakeClient:
    """Answers each prompt from ``answers`` (by expression), records the prompts."""

    def __init__(self, answers: dict[str, list[str] | str]):
        self.answers, self.prompts = answers, []

    def provenance(self, prompt_version: str) -> dict:
        return {"backend": "openai", "model": "fake", "prompt_version": prompt_version}

    def run(self, jobs):
        out = []
        for job in jobs:
            text = job.messages[0]["content"][-1]["text"]
            self.prompts.append(text)
            expr = text.split('"')[1]
            ans = self.answers[expr]
            out.append(JobResult(None, ans, 1) if isinstance(ans, str) else
                        JobResult(job.parse("\n".join(ans)), None, 1))
        return out


def test_analyse_explains_each_kind_of_bad_candidate():
    pos = "A light grey plastic pipe."
    cases = {"A light grey steel pipe.": None, "a light grey wooden pipe": None,
             "A dark grey plastic pipe.": None, "A grey plastic pipe.": "same colour family",
             "A light grey plastic hose.": "noun changed", "A big light grey plastic pipe.": "adds an attribute",
             "A light navy plastic pipe.": "implausible colour", "A light beige plastic pipe.": "implausible",
             "A light grey plastic pipe!": "equals the positive", "A light grey plastic pipe on a roof.":
             "changes words"}
    for cand, why in cases.items():
        v = analyse(pos, cand)
        assert (v.problem is None) if why is None else (why in (v.problem or "")), (cand, v)
    v = analyse(pos, "3. 'a light grey wooden pipe'")
    assert v.text == "A light grey wooden pipe." and v.repaired and v.changes[0].family == "material"
    assert "synonym" in analyse("grey metal rail", "grey iron rail").problem
    assert "already named" in analyse("a grey, red and yellow kite", "a grey, red and red kite").problem


def test_llm_candidates_are_checked_repaired_and_topped_up_by_rules():
    expr = "A light grey plastic pipe."
    answers = {expr: ["1. a light grey wooden pipe", "2. A light grey plastic pipe.", "3) a dark pink plastic pipe",
                      "- a green metal pipe", "a light grey wooden hose", "a grey plastic pipe", "a light grey pvc pipe",
                      "a pastel black plastic pipe", "A black plastic pipe.", "a light grey glass pipe"]}
    client = FakeClient(answers)
    gen = LLMNegatives(NegativesConfig(backend="llm", n=10, max_attempts=2), EndpointConfig(), client=client)
    [res] = gen.generate([expr])
    assert res.error is None and len(res.negatives) == 10 and res.levels == ["hard"] * 10
    assert res.negatives[:4] == ["A light grey wooden pipe.", "A dark pink plastic pipe.", "A black plastic pipe.",
                                 "A light grey glass pipe."]
    assert all(analyse(expr, n).problem is None and len(analyse(expr, n).changes) == 1 for n in res.negatives)
    # 2 rounds of the same 10 lines: 4 valid the first time (3 needed a surface fix), duplicates the second time
    assert res.checks == {"repaired": 3, "kept": 1, "rejected": 16, "replaced": 6}
    assert len(client.prompts) == 2 and "exactly one of its attributes" in client.prompts[0]
    assert gen.provenance()["difficulty"] == "hard" and gen.provenance()["prompt_version"] == "negatives-v2"
    rep = build_report([res], 10)
    assert rep.checks["replaced"] == 6 and rep.changes == {"1": 10} and not rep.failed


def test_llm_mix_counts_each_level_and_never_asks_for_trivial():
    expr = "a small red plastic cup"
    answers = {expr: ["a small blue plastic cup", "a large blue plastic cup", "a large blue glass cup",
                      "a small green plastic cup", "a small red glass cup"]}
    client = FakeClient(answers)
    cfg = NegativesConfig(backend="llm", n=10, max_attempts=1, difficulty="hard,medium,trivial")
    gen = LLMNegatives(cfg, EndpointConfig(), client=client)
    [res] = gen.generate([expr], [["a wooden table", "the old man", "a red cup"]])
    # quotas 4/3/3; trivial has only 2 other objects, the missing one is a rule-based hard negative
    assert Counter(res.levels) == {"hard": 5, "medium": 3, "trivial": 2}
    assert res.checks["kept"] == 4 and res.checks["rejected"] == 1 and res.checks["replaced"] == 6
    assert {"a small blue plastic cup", "a large blue plastic cup", "a small green plastic cup",
            "a small red glass cup"} <= set(res.negatives)
    assert "a large blue glass cup" not in res.negatives  # three changes: no easy share in this mix
    assert "exactly one or two of its attributes" in client.prompts[0]
    assert {"a wooden table", "the old man"} <= set(res.negatives) and "a red cup" not in res.negatives
    assert res.levels[res.negatives.index("a wooden table")] == "trivial"
    for n, lv in zip(res.negatives, res.levels, strict=True):
        if lv != "trivial":
            assert len(analyse(expr, n).changes) == {"hard": 1, "medium": 2}[lv], (n, lv)


def test_llm_transport_failure_is_an_error_not_rule_negatives():
    client = FakeClient({"a red car": "HTTP 500 (after 2 attempts)"})
    [res] = LLMNegatives(NegativesConfig(backend="llm"), EndpointConfig(), client=client).generate(["a red car"])
    assert res.negatives == [] and "HTTP 500" in res.error


def test_assign_negatives_uses_the_record_as_context_and_records_levels():
    recs = [[Region(bbox=[0, 0, 0.5, 0.5], short_expr="a red car"), Region(bbox=[0, 0, 1, 1], short_expr="a tall man"),
             Region(bbox=[0, 0, 1, 1], short_expr="a wooden bench")],
            [Region(bbox=[0, 0, 1, 1], short_expr="a red car"), Region(bbox=[0, 0, 1, 1], short_expr="the dog")]]
    regions = [r for rec in recs for r in rec]
    gen = RuleNegatives(difficulty="hard:1,trivial:1")
    assert assign_negatives(regions, gen, 10, recs) == {}
    first, second = recs[0][0], recs[1][0]
    assert first.flag_short_neg == second.flag_short_neg == 1
    assert {"a tall man", "a wooden bench"} <= set(first.short_expr_negs) and "the dog" not in first.short_expr_negs
    assert "the dog" in second.short_expr_negs and "a tall man" not in second.short_expr_negs
    prov = first.provenance["short_expr_negs"]
    assert prov["difficulty"] == "hard,trivial" and Counter(prov["levels"]) == {"hard": 8, "trivial": 2}
    # without context (hard only) one result serves every region with the same expression
    regions2 = [Region(bbox=[0, 0, 1, 1], short_expr="a red car"), Region(bbox=[0, 0, 1, 1], short_expr="a red car")]
    assign_negatives(regions2, RuleNegatives(), 10, [regions2[:1], regions2[1:]])
    assert regions2[0].short_expr_negs == regions2[1].short_expr_negs
    assert regions2[0].provenance["short_expr_negs"]["levels"] == ["hard"] * 10
