"""Protocol presets (issue 12, section 2): each setting changes exactly what it names, on hand-built
cases; the preset and its settings are recorded, and only equal protocols compare."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from fgclip_core.eval.cache import EmbeddingCache
from fgclip_core.eval.config import BenchmarkSpec, EvalSettings
from fgclip_core.eval.datasets import BenchmarkFormatError, read_benchmark
from fgclip_core.eval.encoder import CachedEncoder
from fgclip_core.eval.protocol import (
    PRESETS,
    SETTING_NAMES,
    meta_from_tags,
    protocol_tags,
    protocols_match,
)
from fgclip_core.eval.runner import run_benchmark
from fgclip_core.eval.suites.zeroshot import mean_per_class_recall

SETTINGS = EvalSettings(progress=False, batch_size=4, chunk_size=3, templates="simple")
DIM = 16


class Table:
    """Images embed as the one-hot of their colour's id; texts as the one-hot the test assigns."""

    fingerprint = "table"

    def __init__(self, colour_ids: dict[tuple[int, int, int], int], text_ids):
        self.colour_ids, self.text_ids = colour_ids, text_ids
        self.texts_seen: list[str] = []

    def _hot(self, ids):
        return torch.nn.functional.one_hot(torch.tensor(ids), DIM).float()

    def encode_images(self, images):
        return self._hot([self.colour_ids[im.convert("RGB").getpixel((0, 0))] for im in images])

    def encode_texts(self, texts, mode):
        self.texts_seen += list(texts)
        return self._hot([self.text_ids(t) for t in texts])

    def encode_regions(self, images, boxes):  # pragma: no cover - no region suite here
        raise AssertionError


def cached(enc, tmp_path: Path) -> CachedEncoder:
    return CachedEncoder(enc, EmbeddingCache(tmp_path / "cache", enc.fingerprint), batch_size=4, progress=False)


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def png(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def test_presets_define_every_setting_and_the_readme_table_documents_it():
    assert set(PRESETS) == {"official", "clip_benchmark"}
    for values in PRESETS.values():
        assert set(values) == set(SETTING_NAMES)
    readme = (Path(__file__).parents[2] / "fgclip_core/eval/README.md").read_text()
    rows = {m.group(1) for m in re.finditer(r"^\| `([a-z_0-9]+)`", readme, flags=re.M)}
    assert set(SETTING_NAMES) <= rows
    assert BenchmarkSpec(suite="fgovd", data="x").protocol == "official"  # the default preset


# --- captions per image: COCO with 7 captions for one image --------------------------------------

def coco_seven_captions(tmp_path: Path) -> Path:
    png(tmp_path / "img" / "a.png", COLOURS[0])
    png(tmp_path / "img" / "b.png", COLOURS[1])
    anns = [{"image_id": 1, "caption": f"a{k}"} for k in range(5)]
    anns += [{"image_id": 1, "caption": f"looks-like-b{k}"} for k in range(2)]  # captions 6 and 7 of image a
    anns += [{"image_id": 2, "caption": f"b{k}"} for k in range(5)]
    doc = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}], "annotations": anns}
    path = tmp_path / "captions_val2017.json"
    path.write_text(json.dumps(doc))
    return path


def test_captions_per_image_first_five_official_every_caption_clip_benchmark(tmp_path):
    path = coco_seven_captions(tmp_path)
    enc = Table({COLOURS[0]: 0, COLOURS[1]: 1}, lambda t: 0 if t.startswith("a") else 1)
    got = {}
    for protocol in ("official", "clip_benchmark"):
        spec = BenchmarkSpec(suite="short-retrieval", data=str(path), images=str(tmp_path / "img"), protocol=protocol)
        got[protocol] = run_benchmark(spec, cached(enc, tmp_path), SETTINGS)
    official, every = got["official"], got["clip_benchmark"]
    assert official.counts["texts"] == 10 and every.counts["texts"] == 12
    assert official.metrics["i2t_R@1"] == 1.0 and official.metrics["t2i_R@1"] == 1.0
    # Every caption: the 2 extra captions of image a look like b -> they miss at 1 (t2i), and they tie
    # b's own captions for image b (i2t, pessimistic): image b misses at 1.
    assert every.metrics["t2i_R@1"] == pytest.approx(10 / 12) and every.metrics["i2t_R@1"] == 0.5
    assert every.metrics["i2t_R@5"] == 1.0 and every.metrics["t2i_R@5"] == 1.0
    override = BenchmarkSpec(suite="short-retrieval", data=str(path), images="/i", captions_per_image=6)
    assert len(read_benchmark(override).texts) == 11
    assert official.protocol == {"name": "official", "settings": {"captions_per_image": 5, "tie_tol": 1e-6,
                                                                   "recall_ks": [1, 5, 10]}}
    assert every.protocol["settings"]["captions_per_image"] == "all"


# --- Flickr30k: the flickr30k_test.json list layout ----------------------------------------------

def test_caption_list_layout_reads_like_the_karpathy_split(tmp_path):
    items = [{"image": "flickr30k-images/1.jpg", "caption": [f"one {k}" for k in range(5)]},
             {"image": "flickr30k-images/2.jpg", "caption": "two"}]
    listed = tmp_path / "flickr30k_test.json"
    listed.write_text(json.dumps(items))
    karpathy = tmp_path / "dataset_flickr30k.json"
    karpathy.write_text(json.dumps({"images": [
        {"filename": "1.jpg", "filepath": "flickr30k-images", "split": "test",
         "sentences": [{"raw": f"one {k}"} for k in range(5)]},
        {"filename": "2.jpg", "filepath": "flickr30k-images", "split": "test", "sentences": [{"raw": "two"}]}]}))
    a = read_benchmark(BenchmarkSpec(suite="short-retrieval", data=str(listed), images="/f"))
    b = read_benchmark(BenchmarkSpec(suite="short-retrieval", data=str(karpathy), images="/f"))
    assert (a.images, a.texts, a.text_to_image) == (b.images, b.texts, b.text_to_image)
    assert a.images == ["/f/flickr30k-images/1.jpg", "/f/flickr30k-images/2.jpg"] and a.text_to_image[-1] == 1
    listed.write_text(json.dumps([{"image": "x.jpg", "caption": [""]}]))
    with pytest.raises(BenchmarkFormatError, match=r"item 0.*caption"):
        read_benchmark(BenchmarkSpec(suite="short-retrieval", data=str(listed), images="/f"))


# --- Urban-1K: first line or whole file; ShareGPT4V item count ------------------------------------

def test_urban1k_caption_first_line_official_whole_file_clip_benchmark(tmp_path):
    (tmp_path / "u" / "caption").mkdir(parents=True)
    (tmp_path / "u" / "caption" / "1.txt").write_text("A red tram.\nIt waits at a stop under rain.\n")
    first = read_benchmark(BenchmarkSpec(suite="long-retrieval", data=str(tmp_path / "u")))
    whole = read_benchmark(BenchmarkSpec(suite="long-retrieval", data=str(tmp_path / "u"), protocol="clip_benchmark"))
    assert first.texts == ["A red tram."]
    assert whole.texts == ["A red tram.\nIt waits at a stop under rain."]
    assert read_benchmark(BenchmarkSpec(suite="long-retrieval", data=str(tmp_path / "u"),
                                        urban1k_caption="whole_file")).texts == whole.texts


def test_sharegpt4v_items_setting_cuts_the_list(tmp_path):
    path = tmp_path / "share.json"
    path.write_text(json.dumps([{"image": f"coco/{i}.jpg", "conversations": [{"from": "gpt", "value": f"c{i}"}]}
                                for i in range(5)]))
    assert len(read_benchmark(BenchmarkSpec(suite="long-retrieval", data=str(path), images="/i")).images) == 5
    assert read_benchmark(BenchmarkSpec(suite="long-retrieval", data=str(path), images="/i",
                                        sharegpt4v_items=2)).texts == ["c0", "c1"]


# --- Zero-shot: drop_last, class names, mean per-class recall --------------------------------------

def two_class_folder(tmp_path: Path, folders=("cat", "dog")) -> Path:
    root = tmp_path / "val"
    for k in range(5):
        png(root / folders[0] / f"{k}.png", COLOURS[0])
    for k in range(5):  # the last 2 images of the second class look like the first
        png(root / folders[1] / f"{k}.png", COLOURS[0] if k >= 3 else COLOURS[1])
    return root


def test_drop_last_drops_the_trailing_partial_batch_and_only_that(tmp_path):
    root = two_class_folder(tmp_path)
    enc = Table({COLOURS[0]: 0, COLOURS[1]: 1}, lambda t: 0 if "cat" in t else 1)
    every = run_benchmark(BenchmarkSpec(suite="zeroshot", data=str(root)), cached(enc, tmp_path), SETTINGS)
    dropped = run_benchmark(BenchmarkSpec(suite="zeroshot", data=str(root), drop_last=True),
                            cached(enc, tmp_path), SETTINGS)
    assert every.n == 10 and every.metrics["top1"] == 0.8 and every.counts["dropped_last_batch"] == 0
    # batch_size 4: 10 % 4 = 2 trailing images dropped (the 2 misclassified ones)
    assert dropped.n == 8 and dropped.metrics["top1"] == 1.0 and dropped.counts["dropped_last_batch"] == 2
    assert every.metrics["mean_per_class_recall"] == pytest.approx((1.0 + 0.6) / 2)
    assert dropped.protocol["settings"]["drop_last"] is True and every.protocol["settings"]["drop_last"] is False


def test_mean_per_class_recall_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    ranks = torch.tensor([0, 0, 3, 0, 1, 0])
    assert mean_per_class_recall(ranks, labels, n_classes=4) == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)


def wordnet_folder(tmp_path: Path, n: int) -> Path:
    root = tmp_path / f"imagenet{n}"
    for k in range(n):
        (root / f"n{k:08d}").mkdir(parents=True)
    png(root / "n00000000" / "a.png", COLOURS[0])
    png(root / "n00000001" / "b.png", COLOURS[1])
    return root


def test_wordnet_folders_get_the_builtin_imagenet_names_never_the_ids(tmp_path):
    root = wordnet_folder(tmp_path, 1000)
    data = read_benchmark(BenchmarkSpec(suite="zeroshot", data=str(root)))
    assert data.classnames[:2] == ["tench", "goldfish"] and len(data.classnames) == 1000
    assert data.classnames_source == "builtin-imagenet1k" and data.labels == [0, 1]
    with pytest.raises(BenchmarkFormatError, match="WordNet ids"):
        read_benchmark(BenchmarkSpec(suite="zeroshot", data=str(root), default_classnames="folders"))
    small = wordnet_folder(tmp_path, 3)
    with pytest.raises(BenchmarkFormatError, match="3 of them"):
        read_benchmark(BenchmarkSpec(suite="zeroshot", data=str(small)))
    names = tmp_path / "names.txt"
    names.write_text("alpha\nbeta\ngamma\n")
    assert read_benchmark(BenchmarkSpec(suite="zeroshot", data=str(small), classnames=str(names))).classnames == [
        "alpha", "beta", "gamma"]


def test_class_names_change_the_prompts_and_top1(tmp_path):
    root = wordnet_folder(tmp_path, 1000)
    enc = Table({COLOURS[0]: 0, COLOURS[1]: 1}, lambda t: 0 if "tench" in t else (1 if "goldfish" in t else 2))
    res = run_benchmark(BenchmarkSpec(suite="zeroshot", data=str(root)), cached(enc, tmp_path), SETTINGS)
    assert "a photo of a tench." in enc.texts_seen and not any("n0000" in t for t in enc.texts_seen)
    assert res.metrics["top1"] == 1.0 and res.protocol["settings"]["classnames_source"] == "builtin-imagenet1k"


# --- recording and comparing ----------------------------------------------------------------------

def meta(ties: str = "optimistic", bench: str = "fgovd-hard") -> dict:
    return {"suite": "fgovd", "benchmark": bench, "metrics": {"accuracy": 0.5},
            "protocol": {"name": "official", "settings": {"ties": ties, "tie_tol": 1e-6}}}


def test_protocols_match_only_on_equal_preset_and_settings():
    assert protocols_match(meta(), meta())
    assert not protocols_match(meta(), meta("pessimistic"))
    legacy = {"suite": "fgovd", "metrics": {"accuracy": 0.5}}
    assert not protocols_match(meta(), legacy) and not protocols_match(legacy, legacy)
    summary_a = {"suite": "all", "protocols": {"a": meta()["protocol"], "b": meta()["protocol"]}}
    summary_b = {"suite": "all", "protocols": {"a": meta()["protocol"], "b": meta("pessimistic")["protocol"]}}
    assert not protocols_match(summary_a, summary_b)
    assert protocols_match(summary_a, summary_b, benchmark="a") and not protocols_match(summary_a, summary_b, "b")
    assert not protocols_match(summary_a, {"suite": "all", "protocols": {"c": meta()["protocol"]}})


def test_protocol_tags_round_trip_and_name_every_setting():
    tags = protocol_tags(meta())
    assert tags["eval.fgovd-hard.protocol"] == "official"
    assert tags["eval.fgovd-hard.protocol.ties"] == '"optimistic"'
    back = meta_from_tags(tags)
    assert back is not None and protocols_match(back, meta()) and not protocols_match(back, meta("pessimistic"))
    assert meta_from_tags({}) is None


def test_evaluate_writes_the_protocol_into_metrics_json(tmp_path):
    from fgclip_core.eval.runner import evaluate

    root = two_class_folder(tmp_path)
    enc = Table({COLOURS[0]: 0, COLOURS[1]: 1}, lambda t: 0 if "cat" in t else 1)
    specs = [BenchmarkSpec(suite="zeroshot", data=str(root), name="zs"),
             BenchmarkSpec(suite="zeroshot", data=str(root), name="zs-cb", protocol="clip_benchmark")]
    out = evaluate(specs, "m", tmp_path / "out", settings=SETTINGS, encoder_factory=lambda *_: enc)
    summary = json.loads(out.metrics_path.read_text())
    per = json.loads((tmp_path / "out" / "zs" / "metrics.json").read_text())
    assert summary["protocols"]["zs"] == per["protocol"] and per["protocol"]["name"] == "official"
    assert summary["protocols"]["zs-cb"]["name"] == "clip_benchmark"
    assert protocols_match(per, summary, benchmark="zs") and not protocols_match(summary, {
        "protocols": {"zs-cb": summary["protocols"]["zs"]}})


def test_gate_compares_only_equal_protocols():
    from fgclip_core.eval.protocol import gate_comparable

    official = protocol_tags({"protocols": {"fgovd-hard": meta()["protocol"], "coco": {"name": "official"}}})
    strict = protocol_tags({"protocols": {"fgovd-hard": meta("pessimistic")["protocol"], "coco": {"name": "official"}}})
    assert gate_comparable(official, dict(official), "fgovd-hard/accuracy")
    assert not gate_comparable(official, strict, "fgovd-hard/accuracy")
    assert gate_comparable(official, strict, "coco/i2t_R@1")  # the gate's own benchmark matches
    assert gate_comparable({}, {}, "fgovd-hard/accuracy")  # neither recorded: compared as before
    assert not gate_comparable(official, {}, "fgovd-hard/accuracy")


class FakeRegistryClient:
    """The few MlflowClient calls promote() makes, over in-memory version tags."""

    def __init__(self, tags: dict[str, dict[str, str]], champion: str):
        self.tags, self.champion = tags, champion

    def get_model_version(self, name, version):
        from types import SimpleNamespace
        return SimpleNamespace(version=version, tags=self.tags[str(version)])

    def get_model_version_by_alias(self, name, alias):
        return self.get_model_version(name, self.champion)

    def set_registered_model_alias(self, name, alias, version):
        self.champion = str(version)

    def set_model_version_tag(self, name, version, key, value):
        self.tags[str(version)][key] = value


@pytest.mark.parametrize("challenger_ties, promoted", [("optimistic", True), ("pessimistic", False)])
def test_promote_skips_a_champion_measured_under_another_protocol(monkeypatch, challenger_ties, promoted):
    from fgclip_core import registry

    def version_tags(ties, value):
        return {"metric.fgovd-hard/accuracy": str(value), **protocol_tags(meta(ties))}

    client = FakeRegistryClient({"1": version_tags("optimistic", 0.5), "2": version_tags(challenger_ties, 0.9)}, "1")
    monkeypatch.setattr(registry, "MlflowClient", lambda: client)
    d = registry.promote("m", "2", "fgovd-hard/accuracy")
    assert d.promoted is promoted and client.champion == ("2" if promoted else "1")
    if not promoted:
        assert "protocol" in d.reason


# --- FG-OVD: one benchmark per difficulty file, attribute breakdowns ------------------------------

def test_fgovd_difficulty_files_are_named_by_difficulty():
    names = {f: BenchmarkSpec(suite="fgovd", data=f"fgovd_json/{f}.jsonl").display_name()
             for f in ("1_attributes_llava", "2_attributes_llava", "3_attributes_llava", "shuffle_negatives_llava",
                       "color")}
    assert names == {"1_attributes_llava": "fgovd-hard", "2_attributes_llava": "fgovd-medium",
                     "3_attributes_llava": "fgovd-easy", "shuffle_negatives_llava": "fgovd-trivial",
                     "color": "fgovd-color"}
    assert BenchmarkSpec(suite="fgovd", data="1_attributes.jsonl", name="mine").display_name() == "mine"


def fgovd_line(attr=None, **kw):
    row = {"img_path": "x.jpg", "bbox": [0, 0, 4, 4], "pos_expression": "a red cup", "neg_expression": ["a blue cup"]}
    if attr is not None:
        row["attribute_type"] = attr
    return json.dumps({**row, **kw})


def test_fgovd_attribute_breakdown_uses_the_same_ranks(tmp_path):
    from fgclip_core.eval.suites.fgovd import attribute_accuracy

    path = tmp_path / "fgovd.jsonl"
    path.write_text("\n".join([fgovd_line("colour"), fgovd_line("Color"), fgovd_line("material"),
                               fgovd_line("transparency")]) + "\n")
    items = read_benchmark(BenchmarkSpec(suite="fgovd", data=str(path), images="/i")).items
    assert [it.attribute for it in items] == ["color", "color", "material", "transparency"]
    ranks = torch.tensor([0, 1, 0, 2])
    assert attribute_accuracy(items, ranks) == {"accuracy/color": 0.5, "accuracy/material": 1.0,
                                                "accuracy/transparency": 0.0}
    path.write_text(fgovd_line() + "\n")
    plain = read_benchmark(BenchmarkSpec(suite="fgovd", data=str(path), images="/i")).items
    assert attribute_accuracy(plain, torch.tensor([0])) == {}  # no attribute type: no breakdown
    path.write_text(fgovd_line() + "\n" + fgovd_line(attr=["color"]) + "\n")
    with pytest.raises(BenchmarkFormatError, match=rf"{path}:2: .*attribute_type"):
        read_benchmark(BenchmarkSpec(suite="fgovd", data=str(path), images="/i"))


def test_entry_overrides_only_the_setting_it_names():
    spec = BenchmarkSpec(suite="short-retrieval", data="x.json", protocol="clip_benchmark", ties="optimistic")
    values = spec.protocol_values()
    assert set(values) == set(SETTING_NAMES)
    assert values == {**PRESETS["clip_benchmark"], "ties": "optimistic"}
    with pytest.raises(ValueError, match="captions_per_image"):
        BenchmarkSpec(suite="short-retrieval", data="x.json", captions_per_image=0)
    with pytest.raises(ValueError):
        BenchmarkSpec(suite="fgovd", data="x.jsonl", protocol="paper")


def test_cli_protocol_flag_is_refused_for_all(tmp_path):
    from click.testing import CliRunner

    from fgclip_core.cli import cli

    r = CliRunner().invoke(cli, ["eval", "all", "--model", "m", "--data", str(tmp_path / "b.yaml"),
                                 "--output", str(tmp_path / "o"), "--protocol", "clip_benchmark"])
    assert r.exit_code == 2 and "give each entry 'protocol:'" in r.output
