"""Small benchmark files in each public layout, built from the bundled sample photos.

Every builder writes the files the real benchmark ships (same names, same fields) with the
sample's real images and hand-written FineHARD annotations, and returns what it wrote so tests can
compare. :func:`write_sample_suite` writes all five and the ``fgclip eval all`` YAML (used by the
demo and the tests).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from PIL import Image


def records(sample_set, n: int | None = None):
    return list(sample_set.records)[:n] if n else list(sample_set.records)


def box_xywh(region, width: int, height: int) -> list[float]:
    x1, y1, x2, y2 = region.bbox
    return [round(x1 * width, 2), round(y1 * height, 2), round((x2 - x1) * width, 2), round((y2 - y1) * height, 2)]


def write_fgovd(sample_set, path: Path, negatives: int | None = None) -> list[dict]:
    """FG-OVD JSONL; ``negatives`` keeps only that many negatives (the benchmark has items with fewer)."""
    rows = []
    for r in records(sample_set):
        for reg in r.bbox_info:
            negs = reg.short_expr_negs[:negatives] if negatives else reg.short_expr_negs
            rows.append({"img_path": r.f_path, "bbox": box_xywh(reg, r.width, r.height),
                         "pos_expression": [reg.short_expr], "neg_expression": list(negs)})
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return rows


def write_sharegpt4v(sample_set, path: Path, prefix: str = "") -> list[dict]:
    items = [{"id": r.id, "image": prefix + r.f_path,
              "conversations": [{"from": "human", "value": "<image>\nDescribe the image in detail."},
                                {"from": "gpt", "value": r.caption}]} for r in records(sample_set)]
    path.write_text(json.dumps(items))
    return items


def write_dci(sample_set, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for r in records(sample_set):
        (folder / f"{r.id}.json").write_text(json.dumps(
            {"image": r.f_path, "short_caption": r.short_caption, "extra_caption": r.caption, "mask_data": {}}))


def write_urban1k(sample_set, root: Path) -> list[str]:
    (root / "image").mkdir(parents=True, exist_ok=True)
    (root / "caption").mkdir(parents=True, exist_ok=True)
    captions = []
    for i, r in enumerate(records(sample_set), start=1):
        Image.open(sample_set.images_root / r.f_path).convert("RGB").save(root / "image" / f"{i}.jpg", quality=90)
        (root / "caption" / f"{i}.txt").write_text(r.caption + "\n")
        captions.append(r.caption)
    return captions


def five_captions(r) -> list[str]:
    """Five distinct short captions per image: the short caption and region phrases."""
    caps = [r.short_caption] + [reg.short_expr for reg in r.bbox_info]
    while len(caps) < 5:
        caps.append(f"a photo showing {r.bbox_info[len(caps) % len(r.bbox_info)].short_expr}")
    return caps[:5]


def write_coco_captions(sample_set, path: Path, extra_caption_for_first: bool = True) -> dict:
    """``captions_val2017.json`` layout; image ids deliberately not in file order."""
    recs = records(sample_set)
    images = [{"id": 1000 - i, "file_name": r.f_path, "width": r.width, "height": r.height}
              for i, r in enumerate(recs)]
    anns = []
    for i, r in enumerate(recs):
        extra = ["a sixth caption, dropped by the 5-caption rule"] if i == 0 and extra_caption_for_first else []
        caps = five_captions(r) + extra
        anns += [{"image_id": 1000 - i, "id": 10 * i + j, "caption": c} for j, c in enumerate(caps)]
    doc = {"info": {}, "licenses": [], "images": images, "annotations": anns}
    path.write_text(json.dumps(doc))
    return doc


def write_karpathy(sample_set, path: Path, n_test: int) -> dict:
    imgs = []
    for i, r in enumerate(records(sample_set)):
        imgs.append({"filename": r.f_path, "imgid": i, "split": "test" if i < n_test else "train",
                     "sentids": list(range(5 * i, 5 * i + 5)),
                     "sentences": [{"raw": c, "tokens": c.split(), "imgid": i, "sentid": 5 * i + j}
                                   for j, c in enumerate(five_captions(r))]})
    doc = {"images": imgs, "dataset": "flickr30k"}
    path.write_text(json.dumps(doc))
    return doc


def write_image_folder(sample_set, root: Path, classnames: Path | None = None) -> list[str]:
    """One class folder per sample photo (folder = record id), names from the short caption."""
    names = []
    for r in sorted(records(sample_set), key=lambda r: r.id):
        d = root / r.id
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample_set.images_root / r.f_path, d / r.f_path)
        names.append(r.short_caption)
    if classnames is not None:
        classnames.write_text("".join(f"{r.id}\t{r.short_caption}\n" for r in sorted(records(sample_set),
                                                                                   key=lambda r: r.id)))
    return names


def write_coco_instances(sample_set, path: Path) -> dict:
    """Boxes of the sample regions; one category per region phrase."""
    images: list[dict] = []
    anns: list[dict] = []
    cats: list[dict] = []
    for i, r in enumerate(records(sample_set)):
        images.append({"id": i + 1, "file_name": r.f_path, "width": r.width, "height": r.height})
        for reg in r.bbox_info:
            cats.append({"id": 100 + len(cats), "name": reg.short_expr, "supercategory": "thing"})
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cats[-1]["id"],
                         "bbox": box_xywh(reg, r.width, r.height), "iscrowd": 0, "area": 1.0})
    doc = {"images": images, "annotations": anns, "categories": cats}
    path.write_text(json.dumps(doc))
    return doc


def write_sample_suite(sample_set, dest: Path, negatives: int | None = None) -> Path:
    """Write one small benchmark per suite under ``dest`` and the YAML listing them; returns the YAML path."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    images = str(sample_set.images_root)
    write_fgovd(sample_set, dest / "fgovd_sample.jsonl", negatives=negatives)
    write_sharegpt4v(sample_set, dest / "share-captioner_sample.json")
    write_coco_captions(sample_set, dest / "captions_sample.json")
    write_image_folder(sample_set, dest / "classification", dest / "classnames.txt")
    write_coco_instances(sample_set, dest / "instances_sample.json")
    suite = {"benchmarks": [
        {"name": "fgovd-sample", "suite": "fgovd", "data": "fgovd_sample.jsonl", "images": images},
        {"name": "sharegpt4v-sample", "suite": "long-retrieval", "data": "share-captioner_sample.json",
         "images": images},
        {"name": "coco-sample", "suite": "short-retrieval", "data": "captions_sample.json", "images": images},
        {"name": "classification-sample", "suite": "zeroshot", "data": "classification",
         "classnames": "classnames.txt"},
        {"name": "boxes-sample", "suite": "box-cls", "data": "instances_sample.json", "images": images},
    ]}
    path = dest / "benchmarks.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m fgclip_core.eval.sample_benchmarks DEST``: materialise the sample and write the suite."""
    import argparse

    from fgclip_core.sample import materialize_sample

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--negatives", type=int, default=None, help="keep only N negatives per FG-OVD item")
    args = ap.parse_args(argv)
    sample = materialize_sample(args.dest / "sample")
    print(write_sample_suite(sample, args.dest / "benchmarks", negatives=args.negatives))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
