"""Promotion gates: may a challenger replace the champion? Pure functions over metric dicts (no MLflow).

Three kinds of gate, all from one validated :class:`Gates` config:

* ``minimum``: an absolute floor per listed metric (the first model must pass these to become champion);
* ``no_regression``: per listed metric, the challenger may fall at most ``tolerance`` below the champion;
* ``primary``: the primary metric must beat the champion's by more than ``min_delta``.

Champion comparisons only make sense on the same benchmark versions: the caller passes the champion's
metrics on the challenger's benchmarks, or ``None`` with ``comparable=False`` when there are none, and
then every champion gate fails (the champion stays). ``lower_is_better`` flips the direction of the
listed metrics (e.g. a loss). A missing or non-finite value fails its gate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Gates(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    primary_metric: str = Field(default="fgovd-sample/accuracy", description="must improve on the champion's")
    min_delta: float = Field(default=0.0, ge=0.0, description="the primary metric must win by more than this")
    minimums: dict[str, float] = Field(default_factory=dict, description="metric -> absolute minimum")
    max_regression: dict[str, float] = Field(
        default_factory=dict, description="metric -> how far below the champion's value it may fall (>= 0)")
    lower_is_better: list[str] = Field(default_factory=list, description="metrics where smaller is better")

    @model_validator(mode="after")
    def _tolerances_non_negative(self) -> Gates:
        bad = {k: v for k, v in self.max_regression.items() if not v >= 0}
        if bad:
            raise ValueError(f"max_regression tolerances must be >= 0: {bad}")
        return self

    def better(self, metric: str) -> float:
        """+1 when larger values of ``metric`` are better, -1 when smaller are."""
        return -1.0 if metric in self.lower_is_better else 1.0


@dataclass(frozen=True)
class GateResult:
    gate: str               # minimum | no_regression | primary
    metric: str
    value: float | None     # the challenger's
    reference: float | None  # the threshold (minimum) or the champion's value
    threshold: float        # minimum value / allowed drop / required gain
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _minimum(g: Gates, metric: str, floor: float, value: float | None) -> GateResult:
    if not _finite(value):
        return GateResult("minimum", metric, value, floor, floor, False, "missing or not finite")
    assert value is not None
    ok = g.better(metric) * (value - floor) >= 0
    sign = ">=" if g.better(metric) > 0 else "<="
    return GateResult("minimum", metric, value, floor, floor, ok, f"{value:.4f} {sign} {floor:.4f}: {ok}")


def _vs_champion(g: Gates, gate: str, metric: str, threshold: float, value: float | None,
                 champion: dict[str, float] | None, comparable: bool) -> GateResult:
    if not _finite(value):
        return GateResult(gate, metric, value, None, threshold, False, "challenger value missing or not finite")
    assert value is not None
    if not comparable or champion is None:
        return GateResult(gate, metric, value, None, threshold, False,
                          "champion not evaluated on these benchmark versions")
    ref = champion.get(metric)
    if not _finite(ref):
        return GateResult(gate, metric, value, ref, threshold, False, "champion value missing or not finite")
    assert ref is not None
    gain = g.better(metric) * (value - ref)
    if gate == "primary":
        ok = gain > threshold
        return GateResult(gate, metric, value, ref, threshold, ok, f"gain {gain:+.4f} > {threshold:.4f}: {ok}")
    ok = gain >= -threshold
    return GateResult(gate, metric, value, ref, threshold, ok, f"change {gain:+.4f} >= -{threshold:.4f}: {ok}")


def evaluate_gates(gates: Gates, challenger: dict[str, float], champion: dict[str, float] | None,
                   *, has_champion: bool, comparable: bool = True) -> list[GateResult]:
    """Every gate's result. Without a champion only the absolute minimums (and the primary metric's
    presence) count; with one, the regression and primary gates compare against ``champion``."""
    results = [_minimum(gates, m, floor, challenger.get(m)) for m, floor in sorted(gates.minimums.items())]
    primary = challenger.get(gates.primary_metric)
    if not has_champion:
        ok = _finite(primary)
        results.append(GateResult("primary", gates.primary_metric, primary, None, gates.min_delta, ok,
                                  "no champion yet" if ok else "missing or not finite"))
        return results
    results += [_vs_champion(gates, "no_regression", m, tol, challenger.get(m), champion, comparable)
                for m, tol in sorted(gates.max_regression.items())]
    results.append(_vs_champion(gates, "primary", gates.primary_metric, gates.min_delta, primary, champion,
                                comparable))
    return results


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def gate_table_markdown(results: list[GateResult]) -> str:
    lines = ["| gate | metric | challenger | reference | threshold | passed | detail |",
             "|---|---|---:|---:|---:|:---:|---|"]
    for r in results:
        lines.append(f"| {r.gate} | {r.metric} | {_cell(r.value)} | {_cell(r.reference)} | {r.threshold:g} | "
                     f"{'yes' if r.passed else '**no**'} | {r.detail} |")
    return "\n".join(lines)
