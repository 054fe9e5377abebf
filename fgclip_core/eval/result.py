"""The typed result of one benchmark run and how it is written to disk.

Files in the output folder:
* ``metrics.json``: ``{"suite", "benchmark", "n", "metrics": {...}, "counts", "missing_images", "model",
  "protocol": {"name", "settings"}}``
  (the first four keys are the interface other parts rely on);
* ``details.jsonl``: one JSON object per evaluated item / query;
* ``result.json``: everything above except the details, plus recall curves and gallery material.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MAX_LISTED_MISSING = 50


@dataclass
class SuiteResult:
    suite: str
    benchmark: str
    n: int  # evaluated items: FG-OVD items, retrieval images, classified images / boxes
    metrics: dict[str, float]
    counts: dict[str, int] = field(default_factory=dict)
    missing_images: list[str] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)  # name -> [metric@1, metric@2, ...]
    gallery: list[dict[str, Any]] = field(default_factory=list)
    model: str = ""
    protocol: dict[str, Any] = field(default_factory=dict)  # {"name", "settings"} (fgclip_core.eval.protocol)

    def metrics_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "benchmark": self.benchmark, "n": self.n, "metrics": self.metrics,
                "counts": self.counts, "missing_images": {"count": len(self.missing_images),
                                                          "first": self.missing_images[:MAX_LISTED_MISSING]},
                "model": self.model, "protocol": self.protocol}

    def write(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(self.metrics_json(), indent=2) + "\n")
        with open(out / "details.jsonl", "w") as f:
            for d in self.details:
                f.write(json.dumps(d) + "\n")
        full = asdict(self)
        full.pop("details")
        full["missing_images"] = self.missing_images
        (out / "result.json").write_text(json.dumps(full, indent=2) + "\n")
        return out / "metrics.json"

    @classmethod
    def read(cls, out_dir: str | Path) -> SuiteResult:
        out = Path(out_dir)
        data = json.loads((out / "result.json").read_text())
        details_path = out / "details.jsonl"
        details = ([json.loads(line) for line in details_path.read_text().splitlines() if line.strip()]
                   if details_path.exists() else [])
        return cls(**data, details=details)
