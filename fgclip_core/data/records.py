"""FineHARD record types: the project's data contract.

One record per image. ``bbox`` is normalised xyxy in [0, 1]. ``short_expr_negs`` holds the hard
negatives of ``short_expr`` (10 when ``flag_short_neg`` is 1). ``provenance`` says which annotator
(backend, model, prompt version) produced which field: keys are field names such as ``caption``,
``short_caption``, ``bbox_info``, ``short_expr_negs``.

These types are plain data: checking them is ``fgclip_core.data.validate``'s job, reading the
official published JSON layout is ``fgclip_core.data.io``'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

Provenance = dict[str, dict[str, Any]]


@dataclass
class Region:
    bbox: list[float]
    short_expr: str
    long_expr: str = ""
    flag_short_neg: int = 0
    short_expr_negs: list[str] = field(default_factory=list)
    score: float | None = None
    provenance: Provenance = field(default_factory=dict)


@dataclass
class FineHARDRecord:
    id: str
    f_path: str
    caption: str = ""
    short_caption: str = ""
    bbox_info: list[Region] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    provenance: Provenance = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FineHARDRecord:
        """Build from our own JSONL layout (already normalised). Raises KeyError/TypeError on bad input."""
        regions = [Region(**r) if not isinstance(r, Region) else r for r in d.get("bbox_info") or []]
        known = {k: d[k] for k in ("id", "f_path", "caption", "short_caption", "width", "height", "provenance") if k in d}
        return cls(bbox_info=regions, **known)
