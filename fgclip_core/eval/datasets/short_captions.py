"""Short-caption retrieval layouts: COCO captions and the Karpathy split JSON (Flickr30k).

* COCO: ``captions_val2017.json`` (``images`` with ``id`` / ``file_name``, ``annotations`` with
  ``image_id`` / ``caption``). Images in id order, captions in file order, the first 5 per image
  (a few COCO images have 6 or 7): 5,000 images and 25,000 texts for val2017.
* Karpathy split (``dataset_flickr30k.json``): ``images`` with ``filename``, ``split`` and
  ``sentences[].raw``; the test split has 1,000 images with 5 captions each.
* Caption list (``flickr30k_test.json``, ``coco_karpathy_test.json``): a JSON list of
  ``{"image": "<path under the images root>", "caption": [captions] or "caption"}``, one item per
  image, in file order.

``max_captions`` (the protocol setting ``captions_per_image``; ``None`` = every caption) keeps the
first captions of each image in file order.
"""

from __future__ import annotations

from collections import defaultdict

from fgclip_core.eval import io
from fgclip_core.eval.datasets._json import load_json, require
from fgclip_core.eval.datasets.errors import BenchmarkFormatError
from fgclip_core.eval.datasets.types import RetrievalData

MAX_CAPTIONS = 5


def _section(data: object, key: str, source: str) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise BenchmarkFormatError(source, None, f"expected a JSON object with a {key!r} list")
    return data[key]


def _build(name: str, source: str, images: list[str], captions: list[list[str]]) -> RetrievalData:
    texts, owner = [], []
    for i, caps in enumerate(captions):
        texts.extend(caps)
        owner.extend([i] * len(caps))
    if not images:
        raise BenchmarkFormatError(source, None, "no images")
    return RetrievalData(name=name, source=source, images=images, texts=texts, text_to_image=owner)


def read_coco_captions(path: str, images_root: str, max_captions: int | None = MAX_CAPTIONS,
                       name: str = "coco-5k") -> RetrievalData:
    data = load_json(path)
    files: dict[int, str] = {}
    for i, img in enumerate(_section(data, "images", path)):
        where = f"images[{i}]"
        if not isinstance(img, dict):
            raise BenchmarkFormatError(path, where, "expected an object")
        files[require(img, "id", int, path, where)] = require(img, "file_name", str, path, where)
    caps: dict[int, list[str]] = defaultdict(list)
    for i, ann in enumerate(_section(data, "annotations", path)):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise BenchmarkFormatError(path, where, "expected an object")
        image_id = require(ann, "image_id", int, path, where)
        if image_id not in files:
            raise BenchmarkFormatError(path, where, f"image_id {image_id} is not in 'images'")
        caps[image_id].append(require(ann, "caption", str, path, where).strip())
    without = [i for i in files if not caps[i]]
    if without:
        raise BenchmarkFormatError(path, None, f"{len(without)} images have no caption (first id {without[0]})")
    ids = sorted(files)
    return _build(name, path, [io.join(images_root, files[i]) for i in ids], [caps[i][:max_captions] for i in ids])


def read_karpathy(path: str, images_root: str, split: str = "test", max_captions: int | None = MAX_CAPTIONS,
                  name: str = "flickr30k-1k") -> RetrievalData:
    data = load_json(path)
    images, captions = [], []
    for i, img in enumerate(_section(data, "images", path)):
        where = f"images[{i}]"
        if not isinstance(img, dict):
            raise BenchmarkFormatError(path, where, "expected an object")
        if require(img, "split", str, path, where) != split:
            continue
        fname = require(img, "filename", str, path, where)
        folder = img.get("filepath")
        sents = require(img, "sentences", list, path, where)
        raws = [s.get("raw") if isinstance(s, dict) else None for s in sents]
        texts = [r.strip() for r in raws if isinstance(r, str) and r.strip()]
        if not raws or len(texts) != len(raws):
            raise BenchmarkFormatError(path, where, "every sentence needs a non-empty 'raw'")
        rel = f"{folder}/{fname}" if isinstance(folder, str) and folder else fname
        images.append(io.join(images_root, rel))
        captions.append(texts[:max_captions])
    if not images:
        raise BenchmarkFormatError(path, None, f"no images in split {split!r}")
    return _build(name, path, images, captions)


def read_caption_list(path: str, images_root: str, max_captions: int | None = MAX_CAPTIONS,
                      name: str = "flickr30k-1k") -> RetrievalData:
    data = load_json(path)
    if not isinstance(data, list):
        raise BenchmarkFormatError(path, None, f"expected a JSON list of items, got {type(data).__name__}")
    images, captions = [], []
    for i, item in enumerate(data):
        where = f"item {i}"
        if not isinstance(item, dict):
            raise BenchmarkFormatError(path, where, "expected an object")
        image = require(item, "image", str, path, where)
        raw = require(item, "caption", (str, list), path, where)
        caps = [raw] if isinstance(raw, str) else raw
        texts = [c.strip() for c in caps if isinstance(c, str) and c.strip()]
        if not caps or len(texts) != len(caps):
            raise BenchmarkFormatError(path, where, "'caption' must be a non-empty string or a list of them")
        images.append(io.join(images_root, image))
        captions.append(texts[:max_captions])
    return _build(name, path, images, captions)
