"""Zero-shot classification layouts (ImageNet style) and COCO instances for box classification.

* Image folder: ``ROOT/<class folder>/<image>``; classes are the folder names in sorted order
  (the ImageFolder convention, e.g. WordNet ids ``n01440764``). Class names come from a class-names
  file: either one name per line in that sorted order, or ``<folder>\\t<name>`` lines. Without a
  file: folders that are WordNet ids get the built-in ImageNet-1k names (all 1,000 classes needed;
  ``default_classnames="builtin"``), and are refused otherwise (ids are never used as names); other
  folder names are used as they are (underscores become spaces).
* Label file: ``<relative image path> <label index>`` per line (whitespace separated; the path may
  not contain spaces), images under the images root, class names from the class-names file
  (one per line, line i = label i). Lines starting with ``#`` are comments.
* COCO instances (``instances_val2017.json``): ``images`` (``id``, ``file_name``), ``categories``
  (``id``, ``name``), ``annotations`` (``image_id``, ``category_id``, ``bbox`` [x, y, w, h] pixels,
  ``iscrowd``). Classes are the categories in file order; every annotation is one item (crowd
  regions included unless ``skip_crowd``), as in the official FG-CLIP box-classification script.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from fgclip_core.eval import io
from fgclip_core.eval.datasets._json import bbox_xywh, load_json, read_source, require
from fgclip_core.eval.datasets.errors import BenchmarkFormatError
from fgclip_core.eval.datasets.types import BoxClassificationData, BoxItem, ClassificationData
from fgclip_core.eval.prompts import N_IMAGENET_CLASSES, imagenet1k_classnames

WORDNET_ID = re.compile(r"n\d{8}")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def _lines(url: str) -> list[tuple[int, str]]:
    return [(n, s.strip()) for n, s in enumerate(read_source(url).splitlines(), start=1)
            if s.strip() and not s.strip().startswith("#")]


def read_classnames(url: str, folders: list[str] | None = None) -> list[str]:
    """Class names from a file; with ``folders``, ``folder<TAB>name`` lines are matched by folder."""
    lines = _lines(url)
    if lines and all("\t" in s for _, s in lines):
        mapping = {}
        for n, s in lines:
            key, value = (p.strip() for p in s.split("\t", 1))
            if not value:
                raise BenchmarkFormatError(url, n, "empty class name")
            mapping[key] = value
        if folders is None:
            return list(mapping.values())
        missing = [f for f in folders if f not in mapping]
        if missing:
            raise BenchmarkFormatError(url, None, f"no class name for folder {missing[0]!r}")
        return [mapping[f] for f in folders]
    names = [s for _, s in lines]
    if folders is not None and len(names) != len(folders):
        raise BenchmarkFormatError(url, None, f"{len(names)} class names for {len(folders)} class folders")
    if not names:
        raise BenchmarkFormatError(url, None, "no class names")
    return names


def _names_without_file(root: str, folders: list[str], default_classnames: str) -> tuple[list[str], str]:
    if not all(WORDNET_ID.fullmatch(f) for f in folders):
        return [f.replace("_", " ") for f in folders], "folders"
    if default_classnames != "builtin":
        raise BenchmarkFormatError(root, None, "the class folders are WordNet ids, which are not class names: give a "
                                               "class-names file (--classnames) or default_classnames: builtin")
    if len(folders) != N_IMAGENET_CLASSES:
        raise BenchmarkFormatError(root, None, f"the class folders are WordNet ids but {len(folders)} of them, not the "
                                               f"{N_IMAGENET_CLASSES} ImageNet-1k classes the built-in names are for: "
                                               "give a class-names file (--classnames)")
    return list(imagenet1k_classnames()), "builtin-imagenet1k"


def read_image_folder(root: str, classnames_file: str | None = None, name: str | None = None,
                      default_classnames: str = "builtin") -> ClassificationData:
    if not io.is_dir(root):
        raise BenchmarkFormatError(root, None, "expected a folder with one sub-folder per class")
    folders = [f for f in io.list_names(root) if io.is_dir(io.join(root, f))]
    if not folders:
        raise BenchmarkFormatError(root, None, "no class sub-folders")
    if classnames_file:
        classnames, source = read_classnames(classnames_file, folders), "file"
    else:
        classnames, source = _names_without_file(root, folders, default_classnames)
    images, labels = [], []
    for label, folder in enumerate(folders):
        for fname in io.list_names(io.join(root, folder)):
            if fname.lower().endswith(IMAGE_EXTS):
                images.append(io.join(root, f"{folder}/{fname}"))
                labels.append(label)
    if not images:
        raise BenchmarkFormatError(root, None, "no images in the class folders")
    return ClassificationData(name=name or PurePosixPath(root.rstrip("/")).name, source=root,
                              images=images, labels=labels, classnames=classnames, classnames_source=source)


def read_label_file(path: str, images_root: str, classnames_file: str | None, name: str | None = None) -> ClassificationData:
    """Without a class-names file, labels index the built-in ImageNet-1k names."""
    classnames = read_classnames(classnames_file) if classnames_file else list(imagenet1k_classnames())
    images, labels = [], []
    for n, s in _lines(path):
        parts = s.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise BenchmarkFormatError(path, n, f"expected '<image path> <label index>', got {s!r}")
        label = int(parts[1])
        if not 0 <= label < len(classnames):
            raise BenchmarkFormatError(path, n, f"label {label} outside [0, {len(classnames)}) "
                                                f"(class names from {classnames_file or 'the built-in ImageNet-1k list'})")
        images.append(io.join(images_root, parts[0]))
        labels.append(label)
    if not images:
        raise BenchmarkFormatError(path, None, "no labelled images")
    return ClassificationData(name=name or PurePosixPath(path).stem, source=path, images=images,
                              labels=labels, classnames=classnames,
                              classnames_source="file" if classnames_file else "builtin-imagenet1k")


def read_coco_instances(path: str, images_root: str, skip_crowd: bool = False,
                        name: str = "coco-boxes") -> BoxClassificationData:
    data = load_json(path)
    if not isinstance(data, dict):
        raise BenchmarkFormatError(path, None, "expected a JSON object")
    sections = {}
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise BenchmarkFormatError(path, None, f"expected a {key!r} list")
        sections[key] = data[key]
    cat_index: dict[int, int] = {}
    classnames: list[str] = []
    for i, cat in enumerate(sections["categories"]):
        where = f"categories[{i}]"
        if not isinstance(cat, dict):
            raise BenchmarkFormatError(path, where, "expected an object")
        cat_index[require(cat, "id", int, path, where)] = len(classnames)
        classnames.append(require(cat, "name", str, path, where))
    files: dict[int, str] = {}
    for i, img in enumerate(sections["images"]):
        where = f"images[{i}]"
        if not isinstance(img, dict):
            raise BenchmarkFormatError(path, where, "expected an object")
        files[require(img, "id", int, path, where)] = require(img, "file_name", str, path, where)
    items = []
    for i, ann in enumerate(sections["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise BenchmarkFormatError(path, where, "expected an object")
        if skip_crowd and ann.get("iscrowd"):
            continue
        image_id = require(ann, "image_id", int, path, where)
        cat = require(ann, "category_id", int, path, where)
        if image_id not in files:
            raise BenchmarkFormatError(path, where, f"image_id {image_id} is not in 'images'")
        if cat not in cat_index:
            raise BenchmarkFormatError(path, where, f"category_id {cat} is not in 'categories'")
        box = bbox_xywh(require(ann, "bbox", list, path, where), path, where)
        items.append(BoxItem(image=io.join(images_root, files[image_id]), bbox_xywh=box,
                             label=cat_index[cat], annotation_id=int(ann.get("id", i))))
    if not items:
        raise BenchmarkFormatError(path, None, "no annotations")
    return BoxClassificationData(name=name, source=path, items=items, classnames=classnames)
