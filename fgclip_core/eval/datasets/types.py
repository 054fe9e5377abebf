"""Benchmark contents after reading, independent of the public layout they came from.

Image fields hold full locations (local path or URL), already joined with the images root.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetrievalData:
    """Image-text retrieval: each text belongs to one image (``text_to_image``)."""

    name: str
    source: str
    images: list[str]
    texts: list[str]
    text_to_image: list[int]


@dataclass(frozen=True)
class FGOVDItem:
    image: str
    bbox_xywh: tuple[float, float, float, float]  # pixels in the original image
    positive: str
    negatives: tuple[str, ...]
    line: int  # 1-based line in the JSONL file
    attribute: str | None = None  # attribute type the negatives change (color, material, pattern, transparency)


@dataclass(frozen=True)
class FGOVDData:
    name: str
    source: str
    items: list[FGOVDItem]


@dataclass(frozen=True)
class ClassificationData:
    name: str
    source: str
    images: list[str]
    labels: list[int]
    classnames: list[str]
    classnames_source: str = "file"  # "file", "builtin-imagenet1k" or "folders"


@dataclass(frozen=True)
class BoxItem:
    image: str
    bbox_xywh: tuple[float, float, float, float]  # pixels in the original image
    label: int  # index into classnames
    annotation_id: int


@dataclass(frozen=True)
class BoxClassificationData:
    name: str
    source: str
    items: list[BoxItem]
    classnames: list[str]
