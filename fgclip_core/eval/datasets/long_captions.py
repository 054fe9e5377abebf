"""Long-caption retrieval layouts: ShareGPT4V-1k, DCI and Urban-1K (one caption per image).

* ShareGPT4V: the captioner JSON (``share-captioner_coco_lcs_sam_1246k_1107.json``), a list of
  ``{"id", "image": "coco/train2017/x.jpg", "conversations": [{"from": "human", ...},
  {"from": "gpt", "value": caption}]}``; the benchmark is the first 1,000 items. ``image`` is
  joined to the images root as given (``basename=True`` keeps only the file name, as the official
  script does with a flat image folder).
* DCI: a folder of per-image annotation JSON files, each with ``image`` (file name under the
  images root) and ``extra_caption`` (the long human caption); files are read in name order.
* Urban-1K: a folder with ``caption/<stem>.txt`` and ``image/<stem>.jpg``; the caption is the file's
  first line (``caption="first_line"``, the official reader) or the whole file (``"whole_file"``).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from fgclip_core.eval import io
from fgclip_core.eval.datasets._json import load_json, read_source, require
from fgclip_core.eval.datasets.errors import BenchmarkFormatError
from fgclip_core.eval.datasets.types import RetrievalData

SHAREGPT4V_LIMIT = 1000


def _one_per_image(name: str, source: str, images: list[str], texts: list[str]) -> RetrievalData:
    if not images:
        raise BenchmarkFormatError(source, None, "no items")
    return RetrievalData(name=name, source=source, images=images, texts=texts,
                         text_to_image=list(range(len(images))))


def read_sharegpt4v(path: str, images_root: str, limit: int = SHAREGPT4V_LIMIT, basename: bool = False,
                    name: str = "sharegpt4v-1k") -> RetrievalData:
    data = load_json(path)
    if not isinstance(data, list):
        raise BenchmarkFormatError(path, None, f"expected a JSON list of items, got {type(data).__name__}")
    images, texts = [], []
    for i, item in enumerate(data[:limit]):
        where = f"item {i}"
        if not isinstance(item, dict):
            raise BenchmarkFormatError(path, where, "expected an object")
        image = require(item, "image", str, path, where)
        convs = require(item, "conversations", list, path, where)
        caption = next((c.get("value") for c in convs if isinstance(c, dict) and c.get("from") == "gpt"), None)
        if not isinstance(caption, str) or not caption.strip():
            raise BenchmarkFormatError(path, where, "no 'gpt' turn with a caption in 'conversations'")
        images.append(io.join(images_root, PurePosixPath(image).name if basename else image))
        texts.append(caption.strip())
    return _one_per_image(name, path, images, texts)


def read_dci(annotations_dir: str, images_root: str, name: str = "dci") -> RetrievalData:
    if not io.is_dir(annotations_dir):
        raise BenchmarkFormatError(annotations_dir, None, "expected a folder of DCI annotation JSON files")
    images, texts = [], []
    for fname in io.list_names(annotations_dir):
        if not fname.endswith(".json"):
            continue
        src = io.join(annotations_dir, fname)
        obj = load_json(src)
        if not isinstance(obj, dict):
            raise BenchmarkFormatError(src, None, "expected a JSON object")
        image = require(obj, "image", str, src, "top level")
        caption = require(obj, "extra_caption", str, src, "top level")
        if not caption.strip():
            raise BenchmarkFormatError(src, "top level", "field 'extra_caption' is empty")
        images.append(io.join(images_root, image))
        texts.append(caption.strip())
    return _one_per_image(name, annotations_dir, images, texts)


def _stem_key(stem: str) -> tuple[int, int | str]:
    return (0, int(stem)) if stem.isdigit() else (1, stem)


def read_urban1k(root: str, images_root: str | None = None, image_ext: str = ".jpg",
                 name: str = "urban-1k", caption: str = "first_line") -> RetrievalData:
    caption_dir = io.join(root, "caption")
    if not io.is_dir(caption_dir):
        raise BenchmarkFormatError(root, None, "expected an Urban-1K folder with 'caption/' and 'image/'")
    image_dir = images_root or io.join(root, "image")
    stems = sorted((n[:-4] for n in io.list_names(caption_dir) if n.endswith(".txt")), key=_stem_key)
    images, texts = [], []
    for stem in stems:
        src = io.join(caption_dir, stem + ".txt")
        text = read_source(src).strip()
        text = text.splitlines()[0].strip() if caption == "first_line" and text else text
        if not text:
            raise BenchmarkFormatError(src, 1, "empty caption")
        images.append(io.join(image_dir, stem + image_ext))
        texts.append(text)
    return _one_per_image(name, root, images, texts)
