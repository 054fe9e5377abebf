"""Issue 14, section 4: one bad line never costs the good ones. JSON bombs, undecodable bytes and
unwritable strings are quarantined as ``record_malformed`` with their line; a quarantined record
does not claim its id; ids derived from paths never collide."""

from __future__ import annotations

import json
import tarfile

import pytest
import webdataset as wds
from click.testing import CliRunner

from fgclip_core.cli import cli
from fgclip_core.data.config import DataConfig, ReadConfig, ShardConfig, ValidationConfig
from fgclip_core.data.io import KEY_PATTERN, iter_raw, key_from_path, record_from_raw
from fgclip_core.data.pipeline import build_shards, validate_annotations
from tests.fixtures.data import make_record, write_images, write_jsonl

GOOD = 13
pytestmark = pytest.mark.timeout(120)


def _bad_lines() -> dict[str, str]:
    """Hostile JSONL lines by name; each must end as one record_malformed entry."""
    big_int = json.dumps(make_record("bigint", "img000.jpg"))[:-1] + ', "width": ' + "7" * 5001 + "}"
    deep_array = "[" * 100_000 + "]" * 100_000
    deep_prov = dict(make_record("deepprov", "img001.jpg"))
    inner: list = []
    nested = inner
    for _ in range(200):   # under json's own recursion limit, over read.max_json_depth
        nested.append([])
        nested = nested[0]
    deep_prov["provenance"] = {"caption": {"trace": inner}}
    surrogate = json.dumps(make_record("surrogate", "img002.jpg")).replace('"a long caption', '"\\ud800 a long caption')
    nan = json.dumps(make_record("nan", "img003.jpg"))[:-1] + ', "provenance": {"caption": {"score": NaN}}}'
    inf = make_record("infscore", "img004.jpg")
    inf["bbox_info"][0]["score"] = 12345.5
    inf_score = json.dumps(inf).replace("12345.5", "1e999")   # parses as float("inf")
    return {"inf_score": inf_score, "bigint": big_int, "deep_array": deep_array, "deep_provenance": json.dumps(deep_prov),
            "surrogate": surrogate, "nan_in_provenance": nan, "not_json": '{"id": "broken", "f_path": '}


@pytest.fixture
def hostile_jsonl(tmp_path):
    root = tmp_path / "images"
    names = write_images(root, GOOD)
    good = [json.dumps(make_record(n.split(".")[0], n)) for n in names]
    bad = _bad_lines()
    lines, bad_at = [], {}
    for i, g in enumerate(good):   # interleave: a bad line between good ones
        lines.append(g)
        if i < len(bad):
            name = list(bad)[i]
            lines.append(bad[name])
            bad_at[len(lines)] = name
    ann = tmp_path / "ann.jsonl"
    ann.write_text("\n".join(lines) + "\n")
    return ann, root, bad_at


def _outcome(out):
    kept = [json.loads(x) for x in (out / "kept.jsonl").read_text().splitlines()] if (out / "kept.jsonl").exists() else []
    q = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    return kept, q


def test_each_json_bomb_is_one_malformed_record_and_the_good_ones_stay(hostile_jsonl, tmp_path):
    ann, root, bad_at = hostile_jsonl
    out = tmp_path / "v"
    summary = validate_annotations(str(ann), str(root), str(out))
    kept, q = _outcome(out)
    assert len(kept) == GOOD == summary.kept and summary.total == GOOD + len(bad_at)
    assert {e["line"]: e["reason"] for e in q} == {line: "record_malformed" for line in bad_at}
    detail = {bad_at[e["line"]]: e["detail"] for e in q}
    assert "integer string conversion" in detail["bigint"]
    assert "nested too deep" in detail["deep_array"] and "max_json_depth" in detail["deep_provenance"]
    assert "surrogate" in detail["surrogate"] and "NaN" in detail["nan_in_provenance"] and "inf" in detail["inf_score"]
    (out / "kept.jsonl").read_text(encoding="utf-8")   # everything written is valid UTF-8


def test_build_shards_keeps_every_good_record_past_json_bombs(hostile_jsonl, tmp_path):
    ann, root, bad_at = hostile_jsonl
    res = build_shards(str(ann), str(root), str(tmp_path / "s"), DataConfig(shards=ShardConfig(samples_per_shard=4)))
    assert res.manifest.total_samples == GOOD and dict(res.summary.by_reason) == {"record_malformed": len(bad_at)}


@pytest.mark.parametrize("cmd", ["validate", "build-shards"])
def test_cli_survives_json_bombs(hostile_jsonl, tmp_path, cmd):
    ann, root, bad_at = hostile_jsonl
    out = tmp_path / "o"
    r = CliRunner().invoke(cli, ["data", cmd, "--annotations", str(ann), "--images", str(root), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and "record_malformed" in r.output
    q = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(e["line"] for e in q) == sorted(bad_at)


def test_line_longer_than_the_limit_is_malformed(tmp_path):
    rec = make_record("long", "a.jpg")
    rec["caption"] = "word " * 1000
    ann = write_jsonl(tmp_path / "a.jsonl", [make_record("short", "b.jpg"), rec])
    items = list(iter_raw(str(ann), ReadConfig(max_record_bytes=2048)))
    assert items[0].parse_error is None and "max_record_bytes" in items[1].parse_error and items[1].line == 2


def _official(tmp_path, n: int):
    root = tmp_path / "images"
    names = write_images(root / "coyo", n)
    recs = []
    for name in names:
        r = make_record("x", f"grit-20m/data-12m/coyo/{name}")
        del r["id"]
        recs.append(r)
    return root, recs


def test_stray_byte_in_an_official_array_costs_only_its_record(tmp_path):
    root, recs = _official(tmp_path, GOOD)
    body = [json.dumps(r, indent=1).encode() for r in recs]
    body[-1] = body[-1].replace(b"a long caption", b"a long \xff caption")       # inside a string, last record
    body[5] = body[5].replace(b'"short_caption"', b'\xfe "short_caption"')       # between tokens, a middle one
    path = tmp_path / "official.json"
    path.write_bytes(b"[\n" + b",\n".join(body) + b"\n]\n")
    out = tmp_path / "v"
    summary = validate_annotations(str(path), str(root), str(out))
    kept, q = _outcome(out)
    assert summary.kept == GOOD - 2 and len(kept) == GOOD - 2
    assert [e["reason"] for e in q] == ["record_malformed", "record_malformed"]
    assert [e["index"] for e in q] == [5, GOOD - 1]
    text = path.read_bytes().split(b"\n")
    assert text[q[1]["line"] - 1].strip() == b"{" and "not UTF-8" in q[1]["detail"]
    assert "\ufffd" in json.dumps(q[1]["raw"], ensure_ascii=False)   # the bad byte shown, not written raw


def test_bombs_inside_an_official_array_are_skipped_element_by_element(tmp_path):
    root, recs = _official(tmp_path, GOOD)
    parts = [json.dumps(r) for r in recs]
    parts.insert(3, "1" * 5001)
    parts.insert(7, "[" * 50_000 + "]" * 50_000)
    parts.insert(9, '{"f_path": oops, "caption": "x"}')
    parts.insert(11, '{"f_path": "coyo/img000.jpg", "caption": "\\udfff", "short_caption": "s"}')
    path = tmp_path / "official.json"
    path.write_text("[" + ",\n".join(parts) + "]")
    summary = validate_annotations(str(path), str(root), str(tmp_path / "v"))
    assert summary.kept == GOOD and dict(summary.by_reason) == {"record_malformed": 4}


def test_a_quarantined_record_does_not_claim_its_id(tmp_path):
    root = tmp_path / "images"
    write_images(root, 3)
    recs = [make_record("dup", "missing.jpg"),     # quarantined: image_missing
            make_record("dup", "img000.jpg"),      # valid: kept, claims "dup"
            make_record("dup", "img001.jpg"),      # valid but "dup" is taken: duplicate_id
            make_record("other", "img002.jpg")]
    ann = write_jsonl(tmp_path / "a.jsonl", recs)
    for workers in (1, 2):
        out = tmp_path / f"v{workers}"
        cfg = DataConfig(validation=ValidationConfig(workers=workers))
        validate_annotations(str(ann), str(root), str(out), cfg)
        kept, q = _outcome(out)
        assert [(k["id"], k["f_path"]) for k in kept] == [("dup", "img000.jpg"), ("other", "img002.jpg")]
        assert [(e["line"], e["reason"]) for e in q] == [(1, "image_missing"), (3, "duplicate_id")]


def test_paths_that_share_a_basename_or_a_squeezed_name_get_distinct_keys(tmp_path):
    root = tmp_path / "images"
    paths = ["a/x.png", "b/x.png", "a_x.png", "a/x.jpg", "a x.png", "a/x", "c/x.tar.gz.png"]
    from tests.fixtures.data import image_bytes
    for p in paths:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(image_bytes(seed=len(p)))
    recs = []
    for p in paths:
        r = make_record("x", p)
        del r["id"]
        recs.append(r)
    ann = write_jsonl(tmp_path / "a.jsonl", recs)
    res = build_shards(str(ann), str(root), str(tmp_path / "s"), DataConfig(shards=ShardConfig(samples_per_shard=100)))
    assert res.summary.kept == len(paths)
    shard = tmp_path / "s" / res.manifest.shards[0].name
    keys = [s["__key__"] for s in wds.WebDataset(str(shard), shardshuffle=False)]
    assert len(keys) == len(set(keys)) == len(paths) and all(KEY_PATTERN.match(k) for k in keys)
    with tarfile.open(shard) as tar:
        assert all(m.name.count(".") == 1 or m.name.endswith(".tok.npy") for m in tar.getmembers())
    # the key depends on the path alone, so it is the same in every run and subset
    assert record_from_raw(recs[1]).id == key_from_path("b/x.png")
    assert len(key_from_path("d/" * 500 + "x.jpg")) <= 200 and KEY_PATTERN.match(key_from_path("é/ü.jpg"))


def test_a_fifo_among_the_annotation_files_is_one_entry_not_a_hang(tmp_path):
    import os

    folder = tmp_path / "ann"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [make_record("a", "a.jpg")])
    os.mkfifo(folder / "b.jsonl")
    write_jsonl(folder / "c.jsonl", [make_record("c", "c.jpg")])
    items = list(iter_raw(str(folder)))
    assert [i.parse_error is None for i in items] == [True, False, True]
    assert "not a regular file" in items[1].parse_error and items[1].source.endswith("b.jsonl")


@pytest.mark.parametrize("line", ["[" * 100_000 + "]" * 100_000, '{"file_name": "a.jpg", "n": ' + "9" * 5001 + "}"])
def test_annotate_metadata_bombs_are_one_clear_error(tmp_path, line):
    from fgclip_core.annotate.metadata_file import iter_metadata_rows

    path = tmp_path / "meta.jsonl"
    path.write_text('{"file_name": "ok.jpg", "caption": "c"}\n' + line + "\n")
    with pytest.raises(ValueError, match=r"meta\.jsonl:2: not a JSON object"):   # a RecursionError would escape
        list(iter_metadata_rows(str(path)))
