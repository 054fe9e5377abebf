"""The paper's numbers next to the measured ones: published figures of known releases as data
(``templates/paper_numbers.yaml``, or the file named by the ``paper_numbers`` setting), the release
recognised by its model fingerprint, and a per-metric comparison (paper, ours, difference, in
percent). A figure is compared only with a result measured under the release's protocol preset.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from fgclip_core.config import StrictModel, load_config
from fgclip_core.eval.protocol import Protocol

DEFAULT_FILE = "templates/paper_numbers.yaml"


class Release(StrictModel):
    model: str
    source: str = Field(min_length=1, description="where the figures are published")
    protocol: Protocol = "official"
    fingerprints: list[str] = Field(default_factory=list, description="model fingerprints (prefixes) of the weights")
    figures: dict[str, float] = Field(default_factory=dict, description="'<benchmark>/<metric>' -> percent")
    tables: dict[str, str] = Field(default_factory=dict, description="'<benchmark>/<metric>' -> the paper "
                                   "table the figure is printed in")
    transcribed_from: str = Field(default="", description="where the figures were read, when not from the "
                                  "paper itself (a second-hand copy is named so that anyone can check it)")

    @field_validator("figures")
    @classmethod
    def _percent(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if not 0.0 <= x <= 100.0 or "/" not in k]
        if bad:
            raise ValueError(f"figures must be '<benchmark>/<metric>': percent in [0, 100]; bad: {bad[:3]}")
        return v


class PaperNumbers(StrictModel):
    releases: dict[str, Release]

    def named(self, name: str) -> Release:
        """The release called ``name``; a ``ConfigError``-style ``ValueError`` naming the known ones otherwise."""
        if name not in self.releases:
            raise ValueError(f"paper_release {name!r} is not a release of the paper numbers file; "
                             f"known: {', '.join(sorted(self.releases)) or 'none'}")
        return self.releases[name]


def load_paper_numbers(path: str | Path | None = None) -> PaperNumbers:
    if path is not None:
        return load_config(PaperNumbers, path)
    with resources.as_file(resources.files("fgclip_core.eval").joinpath(DEFAULT_FILE)) as p:
        return load_config(PaperNumbers, p)


def release_for(fingerprint: str, numbers: PaperNumbers) -> tuple[str, Release] | None:
    """The release whose listed fingerprint the model's fingerprint starts with (16 hex digits or more)."""
    for name, rel in numbers.releases.items():
        if any(len(f) >= 16 and fingerprint.startswith(f) for f in rel.fingerprints):
            return name, rel
    return None


def compare_with_paper(results: list[Any], release: Release) -> dict[str, dict[str, float]]:
    """``{"<benchmark>/<metric>": {"paper", "ours", "diff"}}`` (percent) for every published figure of a
    benchmark evaluated here under the release's protocol."""
    out: dict[str, dict[str, float]] = {}
    for res in results:
        if res.protocol.get("name") != release.protocol:
            continue
        for metric, value in res.metrics.items():
            key = f"{res.benchmark}/{metric}"
            if key in release.figures:
                ours = 100.0 * value
                out[key] = {"paper": release.figures[key], "ours": ours, "diff": ours - release.figures[key]}
    return out


def paper_section(results: list[Any], fingerprint: str, numbers: PaperNumbers,
                  release: str | None = None) -> dict[str, Any] | None:
    """What ``metrics.json`` records under ``"paper"``: the release, its source and the comparison; ``None``
    when the model is no known release. ``release`` (the setting ``paper_release``) names the release to
    compare with whatever the fingerprint says: a converted or fine-tuned copy of a release has other
    bytes than the listed weights. ``matched_by`` records which of the two chose it."""
    if release is not None:
        name, rel, matched_by = release, numbers.named(release), "setting"
    else:
        found = release_for(fingerprint, numbers)
        if found is None:
            return None
        (name, rel), matched_by = found, "fingerprint"
    return {"release": name, "model": rel.model, "source": rel.source, "protocol": rel.protocol,
            "matched_by": matched_by, "transcribed_from": rel.transcribed_from,
            "metrics": {k: {**row, "table": rel.tables.get(k, "")}
                        for k, row in compare_with_paper(results, rel).items()}}


def format_metric(benchmark: str, metric: str, value: float, paper: dict[str, Any] | None) -> str:
    """``i2t_R@1=61.20`` or, with a published figure, ``i2t_R@1=61.20 (paper 60.00, +1.20)``."""
    text = f"{metric}={100 * value:.2f}"
    row = (paper or {}).get("metrics", {}).get(f"{benchmark}/{metric}")
    return text if row is None else f"{text} (paper {row['paper']:.2f}, {row['diff']:+.2f})"
