"""Reading the official FineHARD JSON layout and our JSONL; writing JSONL."""

from __future__ import annotations

import json

import pytest

from fgclip_core.data.config import ReadConfig
from fgclip_core.data.errors import Reason, RecordError
from fgclip_core.data.io import iter_raw, key_from_path, read_jsonl, record_from_raw, write_jsonl
from tests.fixtures.data import make_record
from tests.fixtures.data import write_jsonl as write_lines

OFFICIAL = [
    {
        "f_path": "grit-20m/data-12m/coyo_image_0/00000/000000001.jpg",
        "caption": "A long caption.",
        "short_caption": "a dog on grass",
        "bbox_info": [
            {
                "bbox": [0.1, 0.2, 0.5, 0.9, 0.87],
                "short_expr": "a brown dog",
                "long_expr": "a brown dog lying on green grass",
                "flag_short_neg": 1,
                "short_expr_negs": {str(i): f"a {c} dog" for i, c in zip(
                    [2, 0, 1, 3, 4, 5, 6, 7, 8, 9, 10][:10],
                    ["black", "white", "grey", "red", "blue", "green", "pink", "orange", "purple", "yellow"],
                    strict=True)},
            },
            {"bbox": [0.0, 0.0, 1.0, 1.0], "short_expr": "grass", "long_expr": "green grass",
             "flag_short_neg": 0, "short_expr_negs": {}},
        ],
    }
]


def test_official_json_layout(tmp_path):
    path = tmp_path / "2024-12-06_results.json"
    path.write_text(json.dumps(OFFICIAL))
    items = list(iter_raw(str(path)))
    assert len(items) == 1 and items[0].index == 0 and items[0].line == 1
    rec = record_from_raw(items[0].raw, ReadConfig())
    assert rec.f_path == "coyo_image_0/00000/000000001.jpg"        # official prefix stripped
    assert rec.id.startswith("coyo_image_0_00000_000000001-")        # safe key derived from the path + its hash
    r0, r1 = rec.bbox_info
    assert r0.bbox == [0.1, 0.2, 0.5, 0.9] and r0.score == pytest.approx(0.87)
    # dict negatives come out ordered by their numeric key, not by insertion
    assert r0.short_expr_negs[0] == "a white dog" and r0.short_expr_negs[1] == "a grey dog"
    assert r0.short_expr_negs[2] == "a black dog" and len(r0.short_expr_negs) == 10
    assert r1.score is None and r1.short_expr_negs == [] and r1.flag_short_neg == 0


def test_prefixes_are_configurable():
    raw = dict(OFFICIAL[0], f_path="mirror/x/a.jpg")
    assert record_from_raw(raw, ReadConfig(strip_prefixes=["mirror/"])).f_path == "x/a.jpg"
    assert record_from_raw(raw, ReadConfig()).f_path == "mirror/x/a.jpg"


def test_jsonl_reads_with_bad_lines_kept_as_items(tmp_path):
    good = make_record("a1", "a1.jpg")
    path = write_lines(tmp_path / "ann.jsonl", [good, "{not json", "", make_record("a2", "a2.jpg")])
    items = list(iter_raw(str(path)))
    assert [i.line for i in items] == [1, 2, 4]
    assert items[1].parse_error and items[1].raw == "{not json"
    assert record_from_raw(items[2].raw).id == "a2"


def test_folder_of_files_reads_all_sorted(tmp_path):
    (tmp_path / "b.jsonl").write_text(json.dumps(make_record("b", "b.jpg")) + "\n")
    (tmp_path / "a.json").write_text(json.dumps([make_record("a", "a.jpg")]))
    (tmp_path / "notes.txt").write_text("ignored")
    ids = [record_from_raw(i.raw).id for i in iter_raw(str(tmp_path))]
    assert ids == ["a", "b"]


def test_missing_annotation_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        list(iter_raw(str(tmp_path / "nope.jsonl")))


@pytest.mark.parametrize(("raw", "reason"), [
    ([1, 2], Reason.RECORD_MALFORMED),
    ({"caption": "x", "short_caption": "y"}, Reason.RECORD_MALFORMED),                  # no f_path
    ({"f_path": "a.jpg", "caption": 3, "short_caption": "y"}, Reason.FIELD_NOT_TEXT),
    ({"f_path": "a.jpg", "caption": "x", "short_caption": ["y"]}, Reason.FIELD_NOT_TEXT),
    ({"f_path": "../etc/passwd", "caption": "x", "short_caption": "y"}, Reason.IMAGE_OUTSIDE_ROOT),
    ({"id": "a.b", "f_path": "a.jpg", "caption": "x", "short_caption": "y"}, Reason.RECORD_MALFORMED),
    ({"f_path": "a.jpg", "caption": "x", "short_caption": "y", "bbox_info": {}}, Reason.RECORD_MALFORMED),
    ({"f_path": "a.jpg", "caption": "x", "short_caption": "y",
      "bbox_info": [{"bbox": [0, 0, "1", 1], "short_expr": "s"}]}, Reason.RECORD_MALFORMED),
    ({"f_path": "a.jpg", "caption": "x", "short_caption": "y",
      "bbox_info": [{"bbox": [0, 0, 1, 1], "short_expr": 5}]}, Reason.FIELD_NOT_TEXT),
    ({"f_path": "a.jpg", "caption": "x", "short_caption": "y",
      "bbox_info": [{"bbox": [0, 0, 1, 1], "short_expr": "s", "flag_short_neg": 1,
                     "short_expr_negs": {"0": None}}]}, Reason.FIELD_NOT_TEXT),
    ({"f_path": "a.jpg", "caption": "x", "short_caption": "y",
      "bbox_info": [{"bbox": [0, 0, 1, 1], "short_expr": "s", "flag_short_neg": 2}]}, Reason.RECORD_MALFORMED),
])
def test_layout_errors_carry_reasons(raw, reason):
    with pytest.raises(RecordError) as e:
        record_from_raw(raw)
    assert e.value.reason == reason


def test_key_from_path_is_webdataset_safe():
    assert key_from_path("a/b.c/d.e.jpg").startswith("a_b_c_d_e-")
    assert "." not in key_from_path("x.y/z") and "/" not in key_from_path("x.y/z")


def test_jsonl_round_trip(tmp_path):
    recs = [record_from_raw(make_record(f"r{i}", f"r{i}.jpg")) for i in range(3)]
    out = str(tmp_path / "out.jsonl")
    assert write_jsonl(recs, out) == 3
    assert list(read_jsonl(out)) == recs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("_tmp.")]


def test_official_array_is_read_element_by_element_with_lines(tmp_path):
    recs = [make_record(f"r{i}", f"r{i}.jpg") for i in range(3)]
    path = tmp_path / "pretty.json"
    path.write_text(json.dumps(recs, indent=2))
    items = list(iter_raw(str(path)))
    assert [record_from_raw(i.raw).id for i in items] == ["r0", "r1", "r2"]
    text = path.read_text().splitlines()
    assert all(text[i.line - 1].strip() == "{" for i in items) and items[0].line == 2
    (tmp_path / "empty.json").write_text(" [ ] ")
    assert list(iter_raw(str(tmp_path / "empty.json"))) == []


def test_broken_array_keeps_records_before_the_error(tmp_path):
    good = json.dumps(make_record("a", "a.jpg"))
    other = json.dumps(make_record("b", "b.jpg"))
    path = tmp_path / "broken.json"
    path.write_text("[" + good + ",\n" + other + ',\n{"f_path": oops}]')
    items = list(iter_raw(str(path)))
    assert [i.parse_error is None for i in items] == [True, True, False]
    assert items[2].line == 3 and "not JSON" in items[2].parse_error
    path.write_text(f"[{good}] trailing")
    items = list(iter_raw(str(path)))
    assert items[0].parse_error is None and "closing" in items[1].parse_error


def test_jsonl_bytes_edge_cases(tmp_path):
    rec = make_record("u", "u.jpg")
    rec["caption"] = "line\u2028separator inside a caption"
    path = tmp_path / "edge.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(rec, ensure_ascii=False).encode() + b"\n"
                     + b'{"f_path": "\xff\xfe.jpg"}\n')
    items = list(iter_raw(str(path)))
    assert len(items) == 2
    assert record_from_raw(items[0].raw).caption == rec["caption"]        # BOM skipped, U+2028 kept inside
    assert items[1].line == 2 and "not UTF-8" in items[1].parse_error     # quarantined, not silently replaced
