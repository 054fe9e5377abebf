"""FG-OVD benchmark in the JSONL layout used by the FG-CLIP evaluation scripts.

One object per line: ``img_path`` (relative to the images root, e.g. ``val2017/000000000139.jpg``),
``bbox`` ``[x, y, w, h]`` in pixels of the original image, ``pos_expression`` (a string or a
one-element list: the positive description) and ``neg_expression`` (a list of 1 to 10 negative
descriptions; some items have fewer than 10). Optional ``attribute_type`` (or ``attribute``): the
attribute the negatives change (``color``/``colour``, ``material``, ``pattern``, ``transparency``);
when items carry it the suite adds ``accuracy/<attribute>`` breakdowns.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from fgclip_core.eval import io
from fgclip_core.eval.datasets._json import bbox_xywh, iter_jsonl, require
from fgclip_core.eval.datasets.errors import BenchmarkFormatError
from fgclip_core.eval.datasets.types import FGOVDData, FGOVDItem


def _texts(value: object, key: str, source: str, line: int) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) and t.strip() for t in items):
        raise BenchmarkFormatError(source, line, f"field {key!r} must be a non-empty string or a list of them")
    return items


ATTRIBUTE_ALIASES = {"colour": "color", "colors": "color", "colours": "color", "materials": "material",
                     "patterns": "pattern", "transparent": "transparency"}


def _attribute(obj: dict, source: str, line: int) -> str | None:
    raw = obj.get("attribute_type", obj.get("attribute"))
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip() or not raw.strip().replace(" ", "_").isidentifier():
        raise BenchmarkFormatError(source, line, "field 'attribute_type' must be a word such as 'color'")
    key = raw.strip().lower().replace(" ", "_")
    return ATTRIBUTE_ALIASES.get(key, key)


def read_fgovd(path: str, images_root: str, name: str | None = None) -> FGOVDData:
    items: list[FGOVDItem] = []
    for line, obj in iter_jsonl(path):
        img = require(obj, "img_path", str, path, line)
        box = bbox_xywh(require(obj, "bbox", list, path, line), path, line)
        pos = _texts(require(obj, "pos_expression", (str, list), path, line), "pos_expression", path, line)
        if len(pos) != 1:
            raise BenchmarkFormatError(path, line, f"expected one positive expression, got {len(pos)}")
        negs = _texts(require(obj, "neg_expression", list, path, line), "neg_expression", path, line)
        if not negs:
            raise BenchmarkFormatError(path, line, "field 'neg_expression' is empty")
        items.append(FGOVDItem(image=io.join(images_root, img), bbox_xywh=box, positive=pos[0],
                               negatives=tuple(negs), line=line, attribute=_attribute(obj, path, line)))
    if not items:
        raise BenchmarkFormatError(path, None, "no items")
    return FGOVDData(name=name or PurePosixPath(path).stem, source=path, items=items)
