"""Copy the bundled sample photos out of installed packages and write their FineHARD annotations.

The photos are not stored in this repository: scikit-image, scikit-learn and matplotlib ship them
inside their wheels. ``annotations.json`` (next to this file) names, for every image, the
distribution, import name and path inside that package, the expected pixel size, and our
hand-written caption, short caption and regions (boxes in pixels, measured on the original image).

``materialize_sample(dest)`` produces::

    dest/images/<id>.<ext>        copies of the photos, original bytes and format (PNG L/RGB/RGBA, JPEG)
    dest/annotations.jsonl        one ``FineHARDRecord.to_dict()`` per line, boxes normalised xyxy

and is idempotent: a second call copies nothing and rewrites nothing that is already right.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import metadata, resources
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from PIL import Image

from fgclip_core.data.atomic import atomic_open
from fgclip_core.data.records import FineHARDRecord, Region
from fgclip_core.hashing import sha256_file

ANNOTATIONS_RESOURCE = "annotations.json"
SAMPLE_FORMAT = "fgclip-sample/1"
IMAGES_DIRNAME = "images"
ANNOTATIONS_FILENAME = "annotations.jsonl"

_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class SampleSourceError(FileNotFoundError):
    """A sample photo cannot be taken from the package that should ship it."""


@dataclass(frozen=True)
class SampleSource:
    """Where one sample photo lives: ``path`` is relative to the top-level package directory."""

    distribution: str  # name on PyPI, for the error message ("pip install ...")
    module: str  # import name of the top-level package
    path: str

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class SampleSet:
    images_root: Path
    annotations_path: Path
    records: list[FineHARDRecord]

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, record: FineHARDRecord) -> Path:
        return self.images_root / record.f_path


@dataclass(frozen=True)
class _Entry:
    record: FineHARDRecord
    source: SampleSource


def _load_spec() -> dict[str, Any]:
    text = resources.files("fgclip_core.sample").joinpath(ANNOTATIONS_RESOURCE).read_text(encoding="utf-8")
    spec = json.loads(text)
    if spec.get("format") != SAMPLE_FORMAT:
        raise ValueError(f"{ANNOTATIONS_RESOURCE}: format {spec.get('format')!r}, expected {SAMPLE_FORMAT!r}")
    return spec


def _normalise_box(box_px: list[float], width: int, height: int, where: str) -> list[float]:
    if len(box_px) != 4:
        raise ValueError(f"{where}: bbox_px needs 4 numbers, got {box_px!r}")
    x1, y1, x2, y2 = box_px
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ValueError(
            f"{where}: bbox_px {box_px!r} is not inside a {width}x{height} image with x1<x2, y1<y2"
        )
    return [round(x1 / width, 6), round(y1 / height, 6), round(x2 / width, 6), round(y2 / height, 6)]


def _entries() -> list[_Entry]:
    spec = _load_spec()
    prov = dict(spec["provenance"])
    entries: list[_Entry] = []
    seen: set[str] = set()
    for img in spec["images"]:
        rid = img["id"]
        if not _KEY_RE.match(rid) or rid in seen:
            raise ValueError(f"{ANNOTATIONS_RESOURCE}: id {rid!r} is not a unique WebDataset-safe key")
        seen.add(rid)
        src = SampleSource(**img["source"])
        width, height = int(img["width"]), int(img["height"])
        regions = [
            Region(
                bbox=_normalise_box(r["bbox_px"], width, height, f"{rid} region {i}"),
                short_expr=r["short_expr"],
                long_expr=r["long_expr"],
                flag_short_neg=1,
                short_expr_negs=list(r["short_expr_negs"]),
                provenance={k: dict(prov) for k in ("bbox", "short_expr", "long_expr", "short_expr_negs")},
            )
            for i, r in enumerate(img["regions"])
        ]
        record = FineHARDRecord(
            id=rid,
            f_path=rid + Path(src.filename).suffix.lower(),
            caption=img["caption"],
            short_caption=img["short_caption"],
            bbox_info=regions,
            width=width,
            height=height,
            provenance={k: dict(prov) for k in ("caption", "short_caption", "bbox_info", "short_expr_negs")},
        )
        entries.append(_Entry(record=record, source=src))
    return entries


def sample_records() -> list[FineHARDRecord]:
    """The sample's records (``f_path`` relative to the images folder), without touching any file."""
    return [e.record for e in _entries()]


def sample_sources() -> dict[str, SampleSource]:
    """Record id -> where its photo comes from."""
    return {e.record.id: e.source for e in _entries()}


def _package_dir(module: str) -> Path | None:
    """Directory of an installed top-level package, found without importing it."""
    try:
        spec = find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown version"


def locate_source(source: SampleSource) -> Path:
    """Path of the photo inside its installed package; ``SampleSourceError`` naming package and file."""
    root = _package_dir(source.module)
    if root is None:
        raise SampleSourceError(
            f"sample image {source.filename!r} comes from the package {source.distribution!r} "
            f"(import name {source.module!r}), which is not installed; install it with "
            f"`pip install {source.distribution}` (it is in the project's dev extra)"
        )
    path = root.joinpath(*source.path.split("/"))
    if not path.is_file():
        raise SampleSourceError(
            f"sample image {source.filename!r} is missing from the installed package {source.distribution!r} "
            f"({_version(source.distribution)}): expected {path} ({source.module}/{source.path})"
        )
    return path


def _same_file(a: Path, b: Path) -> bool:
    return b.is_file() and a.stat().st_size == b.stat().st_size and sha256_file(a) == sha256_file(b)


def _atomic_write_bytes(dest: Path, data: bytes) -> None:
    with atomic_open(str(dest)) as f:
        f.write(data)


def _copy_image(src: Path, dest: Path) -> None:
    if not _same_file(src, dest):
        _atomic_write_bytes(dest, src.read_bytes())


def _check_size(path: Path, entry: _Entry) -> None:
    with Image.open(path) as im:
        size = im.size
    rec = entry.record
    if size != (rec.width, rec.height):
        raise SampleSourceError(
            f"sample image {entry.source.filename!r} from {entry.source.distribution!r} "
            f"({_version(entry.source.distribution)}) is {size[0]}x{size[1]}, but its annotations were "
            f"written for {rec.width}x{rec.height}: this package version ships a different picture"
        )


def materialize_sample(dest_dir: str | os.PathLike[str]) -> SampleSet:
    """Copy the sample photos into ``dest_dir/images/`` and write ``dest_dir/annotations.jsonl``.

    Every source is located before anything is copied, so a missing package fails fast with a
    ``SampleSourceError`` that names the package and the file. Idempotent.
    """
    dest = Path(dest_dir)
    images_root = dest / IMAGES_DIRNAME
    entries = _entries()
    sources = [(e, locate_source(e.source)) for e in entries]
    images_root.mkdir(parents=True, exist_ok=True)
    for entry, src in sources:
        target = images_root / entry.record.f_path
        _copy_image(src, target)
        _check_size(target, entry)
    records = [e.record for e in entries]
    text = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)
    data = text.encode("utf-8")
    annotations_path = dest / ANNOTATIONS_FILENAME
    if not (annotations_path.is_file() and annotations_path.read_bytes() == data):
        _atomic_write_bytes(annotations_path, data)
    return SampleSet(images_root=images_root, annotations_path=annotations_path, records=records)
