"""Benchmark readers, one per public layout, and the dispatch from a :class:`BenchmarkSpec`."""

from __future__ import annotations

from dataclasses import replace

from fgclip_core.eval import io
from fgclip_core.eval.config import BenchmarkSpec
from fgclip_core.eval.datasets._json import load_json
from fgclip_core.eval.datasets.classification import read_coco_instances, read_image_folder, read_label_file
from fgclip_core.eval.datasets.errors import BenchmarkFormatError
from fgclip_core.eval.datasets.fgovd import read_fgovd
from fgclip_core.eval.datasets.long_captions import read_dci, read_sharegpt4v, read_urban1k
from fgclip_core.eval.datasets.short_captions import read_caption_list, read_coco_captions, read_karpathy
from fgclip_core.eval.datasets.types import (
    BoxClassificationData,
    ClassificationData,
    FGOVDData,
    RetrievalData,
)

__all__ = ["BenchmarkFormatError", "detect_format", "read_benchmark"]

SUITE_FORMATS = {
    "fgovd": ("fgovd",),
    "long-retrieval": ("sharegpt4v", "dci", "urban1k"),
    "short-retrieval": ("coco", "karpathy", "caption-list"),
    "zeroshot": ("image-folder", "label-file"),
    "box-cls": ("coco-instances",),
}

Data = FGOVDData | RetrievalData | ClassificationData | BoxClassificationData


def _exists_or_fail(url: str) -> None:
    if not io.exists(url):
        raise BenchmarkFormatError(url, None, "not found")


def detect_format(suite: str, data: str) -> str:
    """The public layout of ``data`` for ``suite`` (from its shape, not its name)."""
    _exists_or_fail(data)
    if suite in ("fgovd", "box-cls"):
        return SUITE_FORMATS[suite][0]
    is_dir = io.is_dir(data)
    if suite == "long-retrieval":
        if is_dir:
            return "urban1k" if io.is_dir(io.join(data, "caption")) else "dci"
        return "sharegpt4v"
    if suite == "short-retrieval":
        if is_dir:
            raise BenchmarkFormatError(data, None, "expected a COCO captions or Karpathy split JSON file")
        doc = load_json(data)
        if isinstance(doc, dict) and isinstance(doc.get("annotations"), list):
            return "coco"
        if isinstance(doc, dict) and isinstance(doc.get("images"), list):
            return "karpathy"
        if isinstance(doc, list):
            return "caption-list"
        raise BenchmarkFormatError(data, None, "neither COCO captions ('annotations'), a Karpathy split "
                                               "('images' with 'sentences') nor a caption list "
                                               "([{'image', 'caption'}])")
    if suite == "zeroshot":
        return "image-folder" if is_dir else "label-file"
    raise ValueError(f"unknown suite {suite!r}")


NEEDS_IMAGES_ROOT = ("fgovd", "sharegpt4v", "dci", "coco", "karpathy", "caption-list", "label-file", "coco-instances")


def limit_items(data: Data, n: int) -> Data:
    """The first ``n`` items: FG-OVD lines, images (with their texts), classified images or boxes."""
    if isinstance(data, RetrievalData):
        keep = [j for j, i in enumerate(data.text_to_image) if i < n]
        return replace(data, images=data.images[:n], texts=[data.texts[j] for j in keep],
                       text_to_image=[data.text_to_image[j] for j in keep])
    if isinstance(data, ClassificationData):
        return replace(data, images=data.images[:n], labels=data.labels[:n])
    if isinstance(data, FGOVDData):
        return replace(data, items=data.items[:n])
    return replace(data, items=data.items[:n])


def read_benchmark(spec: BenchmarkSpec) -> Data:
    data = _read(spec)
    return limit_items(data, spec.limit) if spec.limit else data


def _read(spec: BenchmarkSpec) -> Data:
    fmt = detect_format(spec.suite, spec.data) if spec.format == "auto" else spec.format
    if fmt not in SUITE_FORMATS[spec.suite]:
        raise ValueError(f"format {fmt!r} does not belong to suite {spec.suite!r} "
                         f"(one of {SUITE_FORMATS[spec.suite]})")
    _exists_or_fail(spec.data)
    if fmt in NEEDS_IMAGES_ROOT and not spec.images:
        raise BenchmarkFormatError(spec.data, None, f"the {fmt} layout names images relative to an images "
                                                    "root: give --images (or 'images:' in the YAML)")
    images = spec.images or ""
    name = spec.display_name()
    p = spec.protocol_values()
    captions = None if p["captions_per_image"] == "all" else p["captions_per_image"]
    if fmt == "fgovd":
        return read_fgovd(spec.data, images, name=name)
    if fmt == "sharegpt4v":
        return read_sharegpt4v(spec.data, images, limit=p["sharegpt4v_items"],
                               basename=p["sharegpt4v_images"] == "basename", name=name)
    if fmt == "dci":
        return read_dci(spec.data, images, name=name)
    if fmt == "urban1k":
        return read_urban1k(spec.data, spec.images, name=name, caption=p["urban1k_caption"])
    if fmt == "coco":
        return read_coco_captions(spec.data, images, max_captions=captions, name=name)
    if fmt == "karpathy":
        return read_karpathy(spec.data, images, split=spec.split, max_captions=captions, name=name)
    if fmt == "caption-list":
        return read_caption_list(spec.data, images, max_captions=captions, name=name)
    if fmt == "image-folder":
        return read_image_folder(spec.data, spec.classnames, name=name, default_classnames=p["default_classnames"])
    if fmt == "label-file":
        if not spec.classnames and p["default_classnames"] != "builtin":
            raise BenchmarkFormatError(spec.data, None, "a label file needs a class-names file (--classnames) "
                                                        "or default_classnames: builtin")
        return read_label_file(spec.data, images, spec.classnames, name=name)
    return read_coco_instances(spec.data, images, skip_crowd=spec.skip_crowd, name=name)
