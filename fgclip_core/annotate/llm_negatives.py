"""Hard negatives from an LLM behind an OpenAI-compatible endpoint, checked like rule-based ones.

The answer is split into lines; each line is given the positive's surface form and checked by
:func:`~fgclip_core.annotate.negative_checks.analyse` (noun and other words kept, every change
crosses an exclusive group, plausible modifiers, nothing repeated). A valid line counts for the level
its number of changes gives (1 hard, 2 medium, 3 easy) while that level of the run's mix still has
room. When fewer than ``n`` are valid, another request is made (up to ``max_attempts`` rounds); what
is still missing then, and the ``trivial`` share (other objects of the record, never asked of the
LLM), comes from :class:`~fgclip_core.annotate.negatives.RuleNegatives`. Each result counts its
candidates in ``checks``: ``kept``, ``repaired`` (kept after a surface fix), ``rejected`` (failed a
check or had no room), ``replaced`` (rule-based negatives standing in). Transport failures (after
the client's own retries) on the first round are errors, which the pipeline quarantines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from fgclip_core.annotate.attribute_slots import parse
from fgclip_core.annotate.backends.openai_compat import ChatJob, OpenAICompatClient, user_message
from fgclip_core.annotate.config import EndpointConfig, NegativesConfig
from fgclip_core.annotate.lexicon import load_lexicon
from fgclip_core.annotate.negative_checks import analyse
from fgclip_core.annotate.negatives import (
    CHANGES,
    NegativeResult,
    RuleNegatives,
    normalise,
    parse_difficulty,
    quotas,
)

LEVEL_OF = {k: lv for lv, k in CHANGES.items()}
_WORDS = {1: "one", 2: "two", 3: "three"}


def split_lines(text: str) -> list[str]:
    lines = [ln for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    if len(lines) == 1 and ";" in lines[0]:  # some models answer on one line
        lines = lines[0].split(";")
    return lines


class _Pending:
    """The negatives accepted so far for one expression, per level."""

    def __init__(self, expression: str, room: dict[str, int]):
        self.expression = expression
        self.parsed = parse(expression)
        self.room = dict(room)
        self.texts: list[tuple[str, str]] = []
        self.seen = {normalise(expression)}
        self.checks: Counter[str] = Counter()

    def full(self) -> bool:
        return not any(self.room.values())

    def offer(self, lines: Iterable[str]) -> None:
        for line in lines:
            v = analyse(self.expression, line, positive_parsed=self.parsed)
            level = LEVEL_OF.get(len(v.changes))
            key = normalise(v.text)
            if v.problem is not None or level is None or not self.room.get(level) or key in self.seen:
                self.checks["rejected"] += 1
                continue
            self.seen.add(key)
            self.room[level] -= 1
            self.texts.append((v.text, level))
            self.checks["repaired" if v.repaired else "kept"] += 1


class LLMNegatives:
    def __init__(self, cfg: NegativesConfig, endpoint: EndpointConfig, client: OpenAICompatClient | None = None):
        self.cfg = cfg
        self.client = client or OpenAICompatClient(endpoint)
        self.mix = parse_difficulty(cfg.difficulty)
        self.asked = [lv for lv, _ in self.mix if lv != "trivial"]
        self.rules = RuleNegatives(cfg.n, cfg.seed, cfg.difficulty, load_lexicon())
        self.uses_context = "trivial" in dict(self.mix)

    def learn(self, texts: Iterable[str], source: str = "captions") -> None:
        self.rules.learn(texts, source)

    def provenance(self) -> dict[str, Any]:
        return {**self.client.provenance(self.cfg.prompt_version), "difficulty": self.cfg.difficulty,
                "fallback": self.rules.provenance()["prompt_version"]}

    def _prompt(self, expression: str, noun: str | None, round_: int) -> str:
        changes = "exactly " + " or ".join(_WORDS[CHANGES[lv]] for lv in self.asked)
        prompt = self.cfg.prompt_template.format(n=self.cfg.n, expression=expression, noun=noun or "object",
                                                 changes=changes)
        # a different prompt per round, so a caching server cannot hand back the same answer
        return prompt if round_ == 0 else f"{prompt}\n(Attempt {round_ + 1}: give different ones.)"

    def generate(self, expressions: Sequence[str], contexts: Sequence[Sequence[str]] | None = None
                 ) -> list[NegativeResult]:
        ctx = contexts if contexts is not None else [()] * len(expressions)
        room = {lv: k for lv, k in quotas(self.cfg.n, self.mix) if lv != "trivial"}
        pending = [_Pending(e, room) for e in expressions]
        errors: list[str | None] = [None for _ in expressions]
        stopped: set[int] = set()
        for round_ in range(self.cfg.max_attempts if self.asked else 0):
            todo = [i for i, p in enumerate(pending) if not p.full() and i not in stopped]
            if not todo:
                break
            jobs = [ChatJob(user_message(self._prompt(expressions[i], pending[i].parsed.head, round_)), split_lines)
                    for i in todo]
            for i, res in zip(todo, self.client.run(jobs), strict=True):
                if res.error is not None or res.value is None:
                    stopped.add(i)
                    if round_ == 0:  # no answer at all: an error; a later round failing keeps what we have
                        errors[i] = f"negatives/llm: {res.error}"
                    continue
                pending[i].offer(res.value)
        return [NegativeResult(e, [], errors[i]) if errors[i] is not None else self._finish(pending[i], ctx[i])
                for i, e in enumerate(expressions)]

    def _finish(self, p: _Pending, context: Sequence[str]) -> NegativeResult:
        """The LLM's valid negatives, topped up per level by rule-based ones."""
        n = self.cfg.n
        out = list(p.texts)
        fill = self.rules.result(p.expression, context, exclude=[t for t, _ in out])
        spare = list(zip(fill.negatives, fill.levels, strict=True))
        want = Counter({lv: k for lv, k in quotas(n, self.mix)})
        want.subtract(Counter(lv for _, lv in out))
        for lv, _ in self.mix:  # the missing share of each level first, then anything
            for item in [s for s in spare if s[1] == lv][: max(0, want[lv])]:
                out.append(item)
                spare.remove(item)
        out.extend(spare[: max(0, n - len(out))])
        out = out[:n]
        p.checks["replaced"] = len(out) - len(p.texts)
        note = fill.note if len(out) < n else None
        return NegativeResult(p.expression, [t for t, _ in out], levels=[lv for _, lv in out], note=note,
                              checks=dict(p.checks))
