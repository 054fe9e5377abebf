"""Suites end to end with stub encoders injected through the Encoder seam (no model weights).

An *oracle* encoder embeds every image / region / text as the one-hot vector of what it depicts or
says, so it scores every positive highest: each suite must report 100%. A constant encoder ties
everything: with the pessimistic tie rule it must report 0% where chance is not 1.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from fgclip_core.eval import sample_benchmarks as L
from fgclip_core.eval.cache import EmbeddingCache
from fgclip_core.eval.config import BenchmarkSpec, EvalSettings
from fgclip_core.eval.encoder import CachedEncoder, xywh_to_normalised_xyxy
from fgclip_core.eval.runner import run_benchmark

DIM = 2048
SETTINGS = EvalSettings(progress=False, batch_size=4, chunk_size=3)


def pixel_key(img: Image.Image) -> str:
    return hashlib.sha1(img.convert("RGB").tobytes()).hexdigest()


class Oracle:
    """One-hot embeddings from ground truth known to the test."""

    def __init__(self, sample_set, text_id, region_id=None, image_id=None, fingerprint="oracle"):
        self.fingerprint = fingerprint
        self.records = list(sample_set.records)
        self.by_pixels = {pixel_key(Image.open(sample_set.images_root / r.f_path)): i
                          for i, r in enumerate(self.records)}
        self.text_id, self.region_id = text_id, region_id
        self.image_id = image_id or (lambda i: i)
        self.calls = Counter()
        self.modes: set[str] = set()

    def _one_hot(self, ids):
        return torch.nn.functional.one_hot(torch.tensor(ids), DIM).float() * 3.0  # not unit: suite normalises

    def encode_images(self, images):
        self.calls["images"] += len(images)
        return self._one_hot([self.image_id(self.by_pixels[pixel_key(im)]) for im in images])

    def encode_texts(self, texts, mode):
        self.calls["texts"] += len(texts)
        self.modes.add(mode)
        return self._one_hot([self.text_id(t) for t in texts])

    def encode_regions(self, images, boxes):
        self.calls["regions"] += sum(len(b) for b in boxes)
        out = []
        for im, bx in zip(images, boxes, strict=True):
            rec = self.by_pixels[pixel_key(im)]
            out.append(self._one_hot([self.region_id(rec, b.tolist()) for b in bx]))
        return out


class Constant:
    fingerprint = "constant"

    def encode_images(self, images):
        return torch.ones(len(images), 8)

    def encode_texts(self, texts, mode):
        return torch.ones(len(texts), 8)

    def encode_regions(self, images, boxes):
        return [torch.ones(len(b), 8) for b in boxes]


class Vocab(dict):
    def __missing__(self, key):
        self[key] = len(self)
        return self[key]


def cached(enc, tmp_path: Path) -> CachedEncoder:
    return CachedEncoder(enc, EmbeddingCache(tmp_path / "cache", enc.fingerprint), batch_size=4, progress=False)


def nearest_region(records, rec: int, box: list[float]) -> int:
    regions = records[rec].bbox_info
    return min(range(len(regions)), key=lambda j: sum(abs(a - b) for a, b in zip(regions[j].bbox, box, strict=True)))


def fgovd_oracle(sample_set):
    vocab = Vocab()
    records = list(sample_set.records)

    def region_id(rec, box):
        return vocab[records[rec].bbox_info[nearest_region(records, rec, box)].short_expr]

    return Oracle(sample_set, text_id=lambda t: vocab[t], region_id=region_id)


def test_box_to_normalised_xyxy_by_hand():
    assert xywh_to_normalised_xyxy([10, 20, 30, 40], 100, 200) == (0.1, 0.1, 0.4, 0.3)
    assert xywh_to_normalised_xyxy([90, 0, 30, 40], 100, 200) == (0.9, 0.0, 1.0, 0.2)  # clipped


def test_fgovd_oracle_scores_100_with_fewer_negatives(sample_set, tmp_path):
    path = tmp_path / "fgovd.jsonl"
    rows = L.write_fgovd(sample_set, path, negatives=3)
    enc = fgovd_oracle(sample_set)
    res = run_benchmark(BenchmarkSpec(suite="fgovd", data=str(path), images=str(sample_set.images_root)),
                        cached(enc, tmp_path), SETTINGS)
    assert res.metrics == {"accuracy": 1.0}
    assert res.n == len(rows) and not res.missing_images
    assert all(len(d["negative_scores"]) == 3 and d["correct"] for d in res.details)
    assert enc.modes == {"short"}
    assert enc.calls["regions"] == len(rows)  # every box once


def test_fgovd_wrong_region_gets_zero(sample_set, tmp_path):
    path = tmp_path / "fgovd.jsonl"
    L.write_fgovd(sample_set, path)
    vocab = Vocab()
    records = list(sample_set.records)
    # Regions look like their first negative: every item is wrong.
    enc = Oracle(sample_set, text_id=lambda t: vocab[t], region_id=lambda rec, box: vocab[
        records[rec].bbox_info[nearest_region(records, rec, box)].short_expr_negs[0]])
    res = run_benchmark(BenchmarkSpec(suite="fgovd", data=str(path), images=str(sample_set.images_root),
                                      ties="pessimistic"), cached(enc, tmp_path), SETTINGS)
    assert res.metrics["accuracy"] == 0.0
    # negative 0 scores 1; the positive (0) ties the other 9 negatives, which count as ahead of it
    assert {d["rank"] for d in res.details} == {10}
    official = run_benchmark(BenchmarkSpec(suite="fgovd", data=str(path), images=str(sample_set.images_root)),
                             cached(enc, tmp_path), SETTINGS)
    assert official.metrics["accuracy"] == 0.0 and {d["rank"] for d in official.details} == {1}  # ties in favour


def test_fgovd_constant_scorer_ties_count_as_wrong_only_when_pessimistic(sample_set, tmp_path):
    path = tmp_path / "fgovd.jsonl"
    L.write_fgovd(sample_set, path)
    images = str(sample_set.images_root)
    res = run_benchmark(BenchmarkSpec(suite="fgovd", data=str(path), images=images, ties="pessimistic"),
                        cached(Constant(), tmp_path), SETTINGS)
    assert res.metrics["accuracy"] == 0.0
    for protocol, expected in (("official", 1.0), ("clip_benchmark", 0.0)):  # the official script: tie = correct
        res = run_benchmark(BenchmarkSpec(suite="fgovd", data=str(path), images=images, protocol=protocol),
                            cached(Constant(), tmp_path), SETTINGS)
        assert res.metrics["accuracy"] == expected


def test_fgovd_missing_image_is_counted_not_fatal(sample_set, tmp_path):
    path = tmp_path / "fgovd.jsonl"
    rows = L.write_fgovd(sample_set, path)
    ghost = dict(rows[0], img_path="ghost.jpg")
    path.write_text(path.read_text() + json.dumps(ghost) + "\n")
    res = run_benchmark(BenchmarkSpec(suite="fgovd", data=str(path), images=str(sample_set.images_root)),
                        cached(fgovd_oracle(sample_set), tmp_path), SETTINGS)
    assert res.n == len(rows) and res.metrics["accuracy"] == 1.0
    assert res.missing_images == [f"{sample_set.images_root}/ghost.jpg"]
    assert res.counts["skipped_items"] == 1
    res.write(tmp_path / "out")
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["missing_images"]["count"] == 1 and written["n"] == len(rows)


def retrieval_oracle(sample_set, captions_of):
    owner = {c: i for i, r in enumerate(sample_set.records) for c in captions_of(r)}
    return Oracle(sample_set, text_id=lambda t: owner[t])


def test_long_retrieval_oracle_100_in_long_mode(sample_set, tmp_path):
    path = tmp_path / "share4v.json"
    L.write_sharegpt4v(sample_set, path)
    enc = retrieval_oracle(sample_set, lambda r: [r.caption])
    res = run_benchmark(BenchmarkSpec(suite="long-retrieval", data=str(path), images=str(sample_set.images_root)),
                        cached(enc, tmp_path), SETTINGS)
    assert set(res.metrics) == {f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    assert all(v == 1.0 for v in res.metrics.values())
    assert enc.modes == {"long"}
    assert res.gallery and res.gallery[0]["results"][0]["positive"]


def test_short_retrieval_coco_five_captions_and_missing_image(sample_set, tmp_path):
    path = tmp_path / "captions_val2017.json"
    doc = L.write_coco_captions(sample_set, path)
    doc["images"].append({"id": 5, "file_name": "does_not_exist.jpg"})
    doc["annotations"] += [{"image_id": 5, "id": 99999 + j, "caption": f"ghost caption {j}"} for j in range(5)]
    path.write_text(json.dumps(doc))
    enc = retrieval_oracle(sample_set, L.five_captions)
    res = run_benchmark(BenchmarkSpec(suite="short-retrieval", data=str(path), images=str(sample_set.images_root)),
                        cached(enc, tmp_path), SETTINGS)
    n = len(sample_set.records)
    assert res.n == n and res.counts["texts"] == 5 * n and res.counts["dropped_texts"] == 5
    assert res.missing_images == [f"{sample_set.images_root}/does_not_exist.jpg"]
    assert all(v == 1.0 for v in res.metrics.values())
    assert enc.modes == {"short"}
    assert sum(d["kind"] == "t2i" for d in res.details) == 5 * n


def test_retrieval_constant_scorer_gets_zero_at_one(sample_set, tmp_path):
    path = tmp_path / "dataset_flickr30k.json"
    L.write_karpathy(sample_set, path, n_test=13)
    res = run_benchmark(BenchmarkSpec(suite="short-retrieval", data=str(path), images=str(sample_set.images_root)),
                        cached(Constant(), tmp_path), SETTINGS)
    assert res.metrics["i2t_R@1"] == 0.0 and res.metrics["t2i_R@1"] == 0.0
    assert res.metrics["t2i_R@10"] == 0.0  # 12 other images tie ahead of the positive


def test_zeroshot_oracle_top1_100(sample_set, tmp_path):
    root = tmp_path / "val"
    names = L.write_image_folder(sample_set, root)
    order = sorted(range(len(sample_set.records)), key=lambda i: sample_set.records[i].id)
    label_of_record = {rec: lab for lab, rec in enumerate(order)}
    folder_names = [sample_set.records[i].id.replace("_", " ") for i in order]

    def class_of_prompt(prompt):
        return max((j for j, n in enumerate(folder_names) if n in prompt), key=lambda j: len(folder_names[j]))

    enc = Oracle(sample_set, text_id=class_of_prompt, image_id=lambda rec: label_of_record[rec])
    res = run_benchmark(BenchmarkSpec(suite="zeroshot", data=str(root)), cached(enc, tmp_path), SETTINGS)
    assert res.metrics == {"top1": 1.0, "top5": 1.0, "mean_per_class_recall": 1.0}
    assert res.n == len(names)
    assert enc.calls["texts"] == 80 * len(names)  # the 80 CLIP templates per class


def test_box_cls_oracle_top1_100(sample_set, tmp_path):
    path = tmp_path / "instances_val2017.json"
    doc = L.write_coco_instances(sample_set, path)
    names = [c["name"] for c in doc["categories"]]
    records = list(sample_set.records)
    first_cat = {i: sum(len(x.bbox_info) for x in records[:i]) for i in range(len(records))}

    def class_of_prompt(prompt):
        return max((j for j, n in enumerate(names) if n in prompt), key=lambda j: len(names[j]))

    enc = Oracle(sample_set, text_id=class_of_prompt,
                 region_id=lambda rec, box: first_cat[rec] + nearest_region(records, rec, box))
    res = run_benchmark(BenchmarkSpec(suite="box-cls", data=str(path), images=str(sample_set.images_root)),
                        cached(enc, tmp_path), SETTINGS.model_copy(update={"box_templates": "simple"}))
    assert res.metrics == {"top1": 1.0, "top5": 1.0}
    assert res.n == len(doc["annotations"])


def test_embeddings_are_computed_once_per_model_and_content(sample_set, tmp_path):
    path = tmp_path / "fgovd.jsonl"
    L.write_fgovd(sample_set, path)
    spec = BenchmarkSpec(suite="fgovd", data=str(path), images=str(sample_set.images_root))
    first = fgovd_oracle(sample_set)
    r1 = run_benchmark(spec, cached(first, tmp_path), SETTINGS)
    assert first.calls["regions"] > 0 and first.calls["texts"] > 0
    again = fgovd_oracle(sample_set)  # new process, same weights: everything from the disk cache
    again.text_id = first.text_id
    r2 = run_benchmark(spec, cached(again, tmp_path), SETTINGS)
    assert again.calls == Counter()
    assert r2.metrics == r1.metrics and r2.details == r1.details
    other = fgovd_oracle(sample_set)
    other.fingerprint = "other-weights"
    run_benchmark(spec, cached(other, tmp_path), SETTINGS)
    assert other.calls["regions"] == first.calls["regions"]


@pytest.mark.parametrize("bad", ["no-such-suite"])
def test_unknown_suite_rejected(bad):
    with pytest.raises(ValueError):
        BenchmarkSpec(suite=bad, data="x")


def test_truncated_and_non_image_files_are_counted_as_missing(sample_set, tmp_path):
    import shutil

    images = tmp_path / "images"
    shutil.copytree(sample_set.images_root, images)
    first = sample_set.records[0]
    data = (images / first.f_path).read_bytes()
    (images / "truncated.png").write_bytes(data[: len(data) // 3])  # header fine, pixels cut off
    (images / "notes.png").write_text("not an image")
    path = tmp_path / "share4v.json"
    items = L.write_sharegpt4v(sample_set, path)
    items += [dict(items[0], image="truncated.png"), dict(items[1], image="notes.png")]
    path.write_text(json.dumps(items))
    enc = retrieval_oracle(sample_set, lambda r: [r.caption])
    res = run_benchmark(BenchmarkSpec(suite="long-retrieval", data=str(path), images=str(images)),
                        cached(enc, tmp_path), SETTINGS)
    assert sorted(res.missing_images) == [f"{images}/notes.png", f"{images}/truncated.png"]
    assert res.n == len(sample_set.records) and all(v == 1.0 for v in res.metrics.values())


def test_result_round_trips_through_its_files(sample_set, tmp_path):
    from fgclip_core.eval.result import SuiteResult

    path = tmp_path / "fgovd.jsonl"
    L.write_fgovd(sample_set, path, negatives=2)
    res = run_benchmark(BenchmarkSpec(suite="fgovd", data=str(path), images=str(sample_set.images_root)),
                        cached(fgovd_oracle(sample_set), tmp_path), SETTINGS)
    assert res.benchmark == "fgovd-fgovd"  # default name: suite-stem, safe as a folder name
    res.write(tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {"suite", "n", "metrics"} <= set(metrics)
    assert SuiteResult.read(tmp_path / "out") == res


def test_benchmark_names_must_be_folder_safe():
    with pytest.raises(ValueError, match="letters"):
        BenchmarkSpec(suite="fgovd", data="x.jsonl", name="../escape")


def test_evaluate_all_with_baseline_writes_summary_and_per_benchmark_folders(sample_set, tmp_path):
    from fgclip_core.eval.config import load_suite_file
    from fgclip_core.eval.runner import evaluate

    sf = load_suite_file(L.write_sample_suite(sample_set, tmp_path / "bench"))
    specs = [b for b in sf.benchmarks if b.suite in ("fgovd", "long-retrieval")]
    encoders = {"oracle-dir": fgovd_oracle(sample_set), "constant-dir": Constant()}
    out = evaluate(specs, "oracle-dir", tmp_path / "out", settings=SETTINGS, baseline_dir="constant-dir",
                   encoder_factory=lambda d, s: encoders[d])
    summary = json.loads(out.metrics_path.read_text())
    assert summary["suite"] == "all" and summary["metrics"]["fgovd-sample/accuracy"] == 1.0
    assert summary["baseline_metrics"]["fgovd-sample/accuracy"] == 1.0  # official preset: a tie for first is correct
    assert summary["n"] == sum(r.n for r, _ in out.results)
    for spec in specs:
        assert (tmp_path / "out" / spec.name / "metrics.json").exists()
        assert (tmp_path / "out" / spec.name / "baseline" / "details.jsonl").exists()
    assert out.report.html.exists() and out.mlflow_run_id is None


def test_fgovd_attribute_types_add_breakdowns_from_the_same_pass(sample_set, tmp_path):
    path = tmp_path / "fgovd.jsonl"
    rows = L.write_fgovd(sample_set, path)
    kinds = ["color", "material"]
    path.write_text("".join(json.dumps({**r, "attribute_type": kinds[i % 2]}) + "\n" for i, r in enumerate(rows)))
    enc = fgovd_oracle(sample_set)
    res = run_benchmark(BenchmarkSpec(suite="fgovd", data=str(path), images=str(sample_set.images_root)),
                        cached(enc, tmp_path), SETTINGS)
    assert res.metrics == {"accuracy": 1.0, "accuracy/color": 1.0, "accuracy/material": 1.0}
    assert enc.calls["regions"] == len(rows)  # one pass: every region encoded once
    assert {d["attribute"] for d in res.details} == set(kinds)
