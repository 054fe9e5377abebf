"""Benchmark readers on small files in each public layout, built from the bundled sample photos."""

from __future__ import annotations

import json

import pytest

from fgclip_core.eval import sample_benchmarks as L
from fgclip_core.eval.config import BenchmarkSpec
from fgclip_core.eval.datasets import BenchmarkFormatError, detect_format, read_benchmark


def spec(suite, data, images=None, **kw):
    return BenchmarkSpec(suite=suite, data=str(data), images=str(images) if images else None, **kw)


def test_fgovd_jsonl(sample_set, tmp_path):
    path = tmp_path / "hard.jsonl"
    rows = L.write_fgovd(sample_set, path, negatives=4)
    data = read_benchmark(spec("fgovd", path, sample_set.images_root))
    assert len(data.items) == len(rows)
    first = data.items[0]
    assert first.image == f"{sample_set.images_root}/{rows[0]['img_path']}"
    assert first.bbox_xywh == tuple(rows[0]["bbox"])
    assert first.positive == rows[0]["pos_expression"][0]
    assert list(first.negatives) == rows[0]["neg_expression"] and len(first.negatives) == 4
    assert first.line == 1 and data.items[-1].line == len(rows)


@pytest.mark.parametrize("bad_line, error", [
    ('{"img_path": "a.jpg", "bbox": [1, 2, 3], "pos_expression": ["x"], "neg_expression": ["y"]}', "bbox"),
    ('{"img_path": "a.jpg", "bbox": [1, 2, 3, 4], "neg_expression": ["y"]}', "pos_expression"),
    ('{"img_path": "a.jpg", "bbox": [1, 2, 3, 4], "pos_expression": ["x"], "neg_expression": []}', "empty"),
    ('{"img_path": "a.jpg", "bbox": [1, 2, 0, 4], "pos_expression": "x", "neg_expression": ["y"]}', "empty or negative"),
    ('{"img_path": "a.jpg", "bbox": [1, 2, 3, 4], "pos_expression": ["x", "z"], "neg_expression": ["y"]}', "one positive"),
    ('{"img_path": "a.jpg", "bbox": [1, 2, 3, 4], ', "invalid JSON"),
    ('[1, 2]', "expected a JSON object"),
])
def test_fgovd_malformed_line_names_file_and_line(tmp_path, bad_line, error):
    good = json.dumps({"img_path": "a.jpg", "bbox": [1, 2, 3, 4], "pos_expression": ["x"], "neg_expression": ["y"]})
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{bad_line}\n{good}\n")
    with pytest.raises(BenchmarkFormatError, match=error) as e:
        read_benchmark(spec("fgovd", path, tmp_path))
    assert f"{path}:3:" in str(e.value)


def test_missing_benchmark_file_is_named(tmp_path):
    with pytest.raises(BenchmarkFormatError, match="not found") as e:
        read_benchmark(spec("fgovd", tmp_path / "nope.jsonl", tmp_path))
    assert "nope.jsonl" in str(e.value)


def test_sharegpt4v_first_items_and_limit(sample_set, tmp_path):
    path = tmp_path / "share-captioner.json"
    items = L.write_sharegpt4v(sample_set, path)
    data = read_benchmark(spec("long-retrieval", path, sample_set.images_root, limit=5))
    assert detect_format("long-retrieval", str(path)) == "sharegpt4v"
    assert data.texts == [it["conversations"][1]["value"] for it in items[:5]]
    assert data.text_to_image == [0, 1, 2, 3, 4]
    full = read_benchmark(spec("long-retrieval", path, sample_set.images_root))
    assert len(full.images) == len(items)  # fewer than the 1,000 default limit


def test_sharegpt4v_basename_keeps_file_name_only(sample_set, tmp_path):
    path = tmp_path / "share.json"
    L.write_sharegpt4v(sample_set, path, prefix="coco/train2017/")
    rel = read_benchmark(spec("long-retrieval", path, "/imgs", sharegpt4v_images="path"))
    flat = read_benchmark(spec("long-retrieval", path, "/imgs"))  # official preset: by basename
    assert rel.images[0].startswith("/imgs/coco/train2017/")
    assert flat.images[0] == "/imgs/" + rel.images[0].rsplit("/", 1)[1]
    assert read_benchmark(spec("long-retrieval", path, "/imgs", protocol="clip_benchmark")).images == flat.images


def test_sharegpt4v_item_without_caption(tmp_path):
    path = tmp_path / "share.json"
    path.write_text(json.dumps([{"image": "a.jpg", "conversations": [{"from": "human", "value": "hi"}]}]))
    with pytest.raises(BenchmarkFormatError, match=r"item 0.*gpt"):
        read_benchmark(spec("long-retrieval", path, tmp_path))


def test_invalid_json_reports_line(tmp_path):
    path = tmp_path / "share.json"
    path.write_text('[\n{"image": "a.jpg",\n "conversations": [}\n]')
    with pytest.raises(BenchmarkFormatError, match=rf"{path}:3: invalid JSON"):
        read_benchmark(spec("long-retrieval", path, tmp_path))


def test_dci_folder(sample_set, tmp_path):
    folder = tmp_path / "annotations"
    L.write_dci(sample_set, folder)
    assert detect_format("long-retrieval", str(folder)) == "dci"
    data = read_benchmark(spec("long-retrieval", folder, sample_set.images_root))
    by_id = {r.id: r for r in sample_set.records}
    first_id = sorted(by_id)[0]
    assert data.texts[0] == by_id[first_id].caption  # files in name order
    assert len(data.images) == len(by_id)
    (folder / "zz_broken.json").write_text(json.dumps({"image": "x.jpg"}))
    with pytest.raises(BenchmarkFormatError, match=r"zz_broken.json.*extra_caption"):
        read_benchmark(spec("long-retrieval", folder, sample_set.images_root))


def test_urban1k_folder_numeric_order(sample_set, tmp_path):
    root = tmp_path / "Urban1k"
    captions = L.write_urban1k(sample_set, root)
    assert detect_format("long-retrieval", str(root)) == "urban1k"
    data = read_benchmark(spec("long-retrieval", root))
    assert data.texts == captions  # 1, 2, ..., 10, 11 (numeric, not lexical)
    assert data.images[9] == f"{root}/image/10.jpg"


def test_coco_captions_five_per_image_in_id_order(sample_set, tmp_path):
    path = tmp_path / "captions_val2017.json"
    doc = L.write_coco_captions(sample_set, path)
    assert detect_format("short-retrieval", str(path)) == "coco"
    data = read_benchmark(spec("short-retrieval", path, sample_set.images_root))
    n = len(doc["images"])
    assert len(data.images) == n and len(data.texts) == 5 * n  # the 6th caption is dropped
    assert data.text_to_image == [i for i in range(n) for _ in range(5)]
    by_id = sorted(doc["images"], key=lambda x: x["id"])
    assert data.images[0].endswith(by_id[0]["file_name"])
    last = sample_set.records[-1]  # lowest id -> first image
    assert data.texts[:5] == L.five_captions(last)


def test_coco_captions_unknown_image_id(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                "annotations": [{"image_id": 1, "caption": "x"}, {"image_id": 7, "caption": "y"}]}))
    with pytest.raises(BenchmarkFormatError, match=r"annotations\[1\].*image_id 7"):
        read_benchmark(spec("short-retrieval", path, tmp_path))


def test_karpathy_test_split(sample_set, tmp_path):
    path = tmp_path / "dataset_flickr30k.json"
    L.write_karpathy(sample_set, path, n_test=6)
    assert detect_format("short-retrieval", str(path)) == "karpathy"
    data = read_benchmark(spec("short-retrieval", path, sample_set.images_root))
    assert len(data.images) == 6 and len(data.texts) == 30
    train = read_benchmark(spec("short-retrieval", path, sample_set.images_root, split="train"))
    assert len(train.images) == len(sample_set.records) - 6


def test_image_folder_with_classnames_file(sample_set, tmp_path):
    root = tmp_path / "val"
    names_file = tmp_path / "classnames.txt"
    names = L.write_image_folder(sample_set, root, names_file)
    assert detect_format("zeroshot", str(root)) == "image-folder"
    data = read_benchmark(spec("zeroshot", root, classnames=str(names_file)))
    assert data.classnames == names
    assert data.labels == list(range(len(names)))
    plain = read_benchmark(spec("zeroshot", root))
    assert plain.classnames == sorted(r.id.replace("_", " ") for r in sample_set.records)


def test_label_file(sample_set, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("astronaut\ncat\n")
    labels = tmp_path / "val.txt"
    labels.write_text("# path label\nastronaut.png 0\nchelsea.png 1\n")
    data = read_benchmark(spec("zeroshot", labels, sample_set.images_root, classnames=str(names)))
    assert data.labels == [0, 1] and data.classnames == ["astronaut", "cat"]
    labels.write_text("astronaut.png 0\nchelsea.png 5\n")
    with pytest.raises(BenchmarkFormatError, match=rf"{labels}:2: label 5 outside"):
        read_benchmark(spec("zeroshot", labels, sample_set.images_root, classnames=str(names)))
    with pytest.raises(BenchmarkFormatError, match="class-names file"):
        read_benchmark(spec("zeroshot", labels, sample_set.images_root, default_classnames="folders"))
    builtin = read_benchmark(spec("zeroshot", labels, sample_set.images_root))  # labels index ImageNet-1k
    assert builtin.classnames[:2] == ["tench", "goldfish"] and builtin.classnames_source == "builtin-imagenet1k"


def test_coco_instances(sample_set, tmp_path):
    path = tmp_path / "instances_val2017.json"
    doc = L.write_coco_instances(sample_set, path)
    data = read_benchmark(spec("box-cls", path, sample_set.images_root))
    assert len(data.items) == len(doc["annotations"])
    assert data.classnames == [c["name"] for c in doc["categories"]]
    assert [it.label for it in data.items] == list(range(len(doc["categories"])))
    doc["annotations"][3]["category_id"] = 9999
    path.write_text(json.dumps(doc))
    with pytest.raises(BenchmarkFormatError, match=r"annotations\[3\].*category_id 9999"):
        read_benchmark(spec("box-cls", path, sample_set.images_root))


def test_format_must_belong_to_suite(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("")
    with pytest.raises(ValueError, match="does not belong"):
        read_benchmark(spec("fgovd", path, tmp_path, format="coco"))


def test_sample_suite_yaml_lists_a_readable_benchmark_per_suite(sample_set, tmp_path):
    from fgclip_core.eval.config import SUITES, load_suite_file

    sf = load_suite_file(L.write_sample_suite(sample_set, tmp_path / "bench"))
    assert sorted(b.suite for b in sf.benchmarks) == sorted(SUITES)
    for b in sf.benchmarks:
        assert read_benchmark(b).name == b.name


def test_suite_yaml_errors_name_the_file(tmp_path):
    from fgclip_core.config import ConfigError
    from fgclip_core.eval.config import load_suite_file

    path = tmp_path / "b.yaml"
    path.write_text("benchmarks:\n  - {suite: fgovd, data: a.jsonl, colour: red}\n")
    with pytest.raises(ConfigError, match=rf"(?s){path}.*colour"):
        load_suite_file(path)
    path.write_text("benchmarks:\n  - {name: a, suite: fgovd, data: a.jsonl}\n  - {name: a, suite: fgovd, data: b.jsonl}\n")
    with pytest.raises(ConfigError, match="unique"):
        load_suite_file(path)


def test_limit_keeps_first_images_with_their_captions(sample_set, tmp_path):
    path = tmp_path / "captions_val2017.json"
    L.write_coco_captions(sample_set, path)
    data = read_benchmark(spec("short-retrieval", path, sample_set.images_root, limit=3))
    assert len(data.images) == 3 and len(data.texts) == 15 and max(data.text_to_image) == 2
    fg = tmp_path / "f.jsonl"
    L.write_fgovd(sample_set, fg)
    assert len(read_benchmark(spec("fgovd", fg, sample_set.images_root, limit=7)).items) == 7


def test_layouts_with_relative_image_paths_need_an_images_root(sample_set, tmp_path):
    fg = tmp_path / "f.jsonl"
    L.write_fgovd(sample_set, fg)
    with pytest.raises(BenchmarkFormatError, match="--images"):
        read_benchmark(spec("fgovd", fg))


def test_example_suite_yaml_is_valid():
    from importlib import resources

    from fgclip_core.eval.config import SUITES, load_suite_file

    path = resources.files("fgclip_core.eval").joinpath("templates/benchmarks.example.yaml")
    sf = load_suite_file(str(path))
    assert {b.suite for b in sf.benchmarks} == set(SUITES)
    assert all(b.data.startswith(str(path.parent)) for b in sf.benchmarks)
