"""The distribution of a run's negatives, as a person checks it (``fgclip annotate negatives --report``).

Every negative is re-read against its positive with :func:`~fgclip_core.annotate.negative_checks.analyse`
(independently of the backend that wrote it): changes per negative, the attribute families and
dimensions changed, the most frequent replacements, negatives that fail a check (by kind), and the
expressions with fewer than ``n`` negatives with the generator's reason.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from fgclip_core.annotate.attribute_slots import parse
from fgclip_core.annotate.lexicon import load_lexicon
from fgclip_core.annotate.negative_checks import analyse
from fgclip_core.annotate.negatives import NegativeResult

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


@dataclass
class NegativeReport:
    n: int
    expressions: int = 0
    negatives: int = 0
    full: int = 0
    levels: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)  # "1", "2", "3", "other object"
    families: Counter[str] = field(default_factory=Counter)
    dims: Counter[str] = field(default_factory=Counter)
    replacements: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)  # check failures by kind
    failed_examples: dict[str, str] = field(default_factory=dict)
    fewer: list[tuple[str, int, str]] = field(default_factory=list)
    fewer_reasons: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)  # llm: kept / repaired / rejected / replaced

    def add(self, res: NegativeResult) -> None:
        lex = load_lexicon()
        self.expressions += 1
        self.negatives += len(res.negatives)
        self.full += len(res.negatives) >= self.n
        self.checks.update(res.checks)
        parsed = parse(res.expression, lex)
        levels = res.levels or ["?"] * len(res.negatives)
        for neg, level in zip(res.negatives, levels, strict=True):
            self.levels[level] += 1
            if level == "trivial":
                self.changes["other object"] += 1
                continue
            v = analyse(res.expression, neg, lex, parsed)
            if v.problem is not None:
                kind = _QUOTED.sub("…", v.problem)
                self.failed[kind] += 1
                self.failed_examples.setdefault(kind, f"{res.expression} -> {neg}")
                continue
            self.changes[str(len(v.changes))] += 1
            for c in v.changes:
                self.families[c.family] += 1
                self.dims[c.dim] += 1
                self.replacements[f"{c.old} -> {c.new}"] += 1
        if len(res.negatives) < self.n:
            why = res.error or res.note or "unknown"
            self.fewer.append((res.expression, len(res.negatives), why))
            self.fewer_reasons[re.sub(r"\d+", "N", _QUOTED.sub("…", why))] += 1


def build_report(results: Iterable[NegativeResult], n: int) -> NegativeReport:
    rep = NegativeReport(n)
    for r in results:
        rep.add(r)
    return rep


def _print(console: Console, title: str, counts: Counter[str], total: int, top: int | None = None) -> None:
    if title:
        console.print(title + ":")
    console.print(_table(counts, total, top))


def _table(counts: Counter[str], total: int, top: int | None = None) -> Table:
    t = Table()
    t.add_column("value")
    t.add_column("count", justify="right")
    t.add_column("share", justify="right")
    for k, v in counts.most_common(top):
        t.add_row(k, str(v), f"{v / max(1, total):.1%}")
    return t


def print_report(rep: NegativeReport, console: Console, top: int = 15, examples: int = 20) -> None:
    """Tables of the report; titles are printed as lines of their own (a table title wraps)."""
    console.print(f"{rep.expressions} expressions, {rep.negatives} negatives; {rep.full} expressions with "
                  f"{rep.n} ({rep.full / max(1, rep.expressions):.1%})")
    _print(console, "difficulty level per negative", rep.levels, rep.negatives)
    _print(console, "attributes changed per negative", rep.changes, rep.negatives)
    changed = sum(rep.families.values())
    _print(console, "attribute families changed", rep.families, changed)
    _print(console, "dimensions changed", rep.dims, changed)
    _print(console, f"top {top} replacements", rep.replacements, changed, top)
    if rep.checks:
        _print(console, "llm candidates", rep.checks, sum(rep.checks.values()))
    if rep.failed:
        _print(console, "negatives failing the checks", rep.failed, rep.negatives)
        for kind, ex in rep.failed_examples.items():
            console.print(f"  {kind}: e.g. {ex}")
    if rep.fewer:
        _print(console, f"why {len(rep.fewer)} expressions have fewer than {rep.n}", rep.fewer_reasons, len(rep.fewer))
        for expr, k, why in rep.fewer[:examples]:
            console.print(f"  {k:2d}  {expr}  ({why})")
        if len(rep.fewer) > examples:
            console.print(f"  ... and {len(rep.fewer) - examples} more")
