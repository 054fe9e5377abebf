"""Hard negatives from an LLM behind an OpenAI-compatible endpoint, validated and repaired.

The answer is split into lines and cleaned by :func:`repair_negatives` (numbering, bullets and
quotes stripped; duplicates, copies of the positive and lines without the head noun dropped).
When fewer than ``n`` valid negatives remain, another request is made (up to ``max_attempts``
rounds); the valid ones of all rounds are merged. Transport failures (after the client's own
retries) are reported as errors, which the pipeline quarantines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fgclip_core.annotate.backends.openai_compat import ChatJob, OpenAICompatClient, user_message
from fgclip_core.annotate.config import EndpointConfig, NegativesConfig
from fgclip_core.annotate.negatives import NegativeResult, head_noun, repair_negatives


def split_lines(text: str) -> list[str]:
    lines = [ln for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    if len(lines) == 1 and ";" in lines[0]:  # some models answer on one line
        lines = lines[0].split(";")
    return lines


class LLMNegatives:
    def __init__(self, cfg: NegativesConfig, endpoint: EndpointConfig, client: OpenAICompatClient | None = None):
        self.cfg = cfg
        self.client = client or OpenAICompatClient(endpoint)

    def provenance(self) -> dict[str, Any]:
        return self.client.provenance(self.cfg.prompt_version)

    def _prompt(self, expression: str, noun: str | None, round_: int) -> str:
        prompt = self.cfg.prompt_template.format(n=self.cfg.n, expression=expression, noun=noun or "object")
        # a different prompt per round, so a caching server cannot hand back the same answer
        return prompt if round_ == 0 else f"{prompt}\n(Attempt {round_ + 1}: give different ones.)"

    def generate(self, expressions: Sequence[str]) -> list[NegativeResult]:
        nouns = [head_noun(e) for e in expressions]
        raw: list[list[str]] = [[] for _ in expressions]
        valid: list[list[str]] = [[] for _ in expressions]
        errors: list[str | None] = [None for _ in expressions]
        stopped: set[int] = set()
        for round_ in range(self.cfg.max_attempts):
            todo = [i for i in range(len(expressions)) if len(valid[i]) < self.cfg.n and i not in stopped]
            if not todo:
                break
            jobs = [ChatJob(user_message(self._prompt(expressions[i], nouns[i], round_)), split_lines) for i in todo]
            for i, res in zip(todo, self.client.run(jobs), strict=True):
                if res.error is not None or res.value is None:
                    stopped.add(i)
                    if round_ == 0:  # no answer at all: an error; a later round failing keeps what we have
                        errors[i] = f"negatives/llm: {res.error}"
                    continue
                raw[i].extend(res.value)
                valid[i] = repair_negatives(expressions[i], raw[i], self.cfg.n, nouns[i])
        return [NegativeResult(e, valid[i] if errors[i] is None else [], errors[i]) for i, e in enumerate(expressions)]
