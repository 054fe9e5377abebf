"""Validation: each kind of bad input ends quarantined with its reason; counts always add up."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fgclip_core.data.config import DataConfig, ValidationConfig
from fgclip_core.data.io import RawItem
from fgclip_core.data.pipeline import validate_annotations
from fgclip_core.data.validate import Kept, QuarantineEntry, Validator
from tests.fixtures.data import image_bytes, make_record, write_jsonl


def _item(raw, i=0):
    return RawItem(raw=raw, source="ann.jsonl", index=i, line=i + 1)


def _mutate(fn):
    rec = make_record("r0", "r0.jpg")
    fn(rec)
    return rec


def _set_neg(i, value):
    def f(r):
        r["bbox_info"][0]["short_expr_negs"][i] = value
    return f


ANNOTATION_MISTAKES = {
    "bbox_out_of_range": lambda r: r["bbox_info"][0].update(bbox=[0.1, 0.1, 1.2, 0.5]),
    "bbox_nan": lambda r: r["bbox_info"][1].update(bbox=[0.1, float("nan"), 0.3, 0.5]),
    "bbox_degenerate": lambda r: r["bbox_info"][0].update(bbox=[0.5, 0.1, 0.5, 0.6]),
    "caption_empty": lambda r: r.update(caption="   \n"),
    "negatives_wrong_count": lambda r: r["bbox_info"][0]["short_expr_negs"].pop(),
    "negative_equals_positive": _set_neg(3, "Red  object 0 of r0"),
    "negatives_duplicated": _set_neg(4, "colour1 object 0 of r0"),
    "field_not_text": lambda r: r.update(short_caption=12),
    "record_malformed": lambda r: r.update(bbox_info="boxes"),
}


@pytest.mark.parametrize("reason", sorted(ANNOTATION_MISTAKES))
def test_each_annotation_mistake_is_quarantined_with_its_reason(reason):
    v = Validator(None, validation=ValidationConfig(check_images=False))
    out = v.check(_item(_mutate(ANNOTATION_MISTAKES[reason])))
    assert isinstance(out, QuarantineEntry), out
    assert out.reason == reason and out.detail and out.source == "ann.jsonl" and out.line == 1
    # the untouched record passes, so the mutation is what was caught
    assert isinstance(Validator(None, validation=ValidationConfig(check_images=False)).check(
        _item(make_record("r0", "r0.jpg"))), Kept)


def test_duplicate_id_second_one_quarantined():
    v = Validator(None, validation=ValidationConfig(check_images=False))
    assert isinstance(v.check(_item(make_record("same", "a.jpg"))), Kept)
    out = v.check(_item(make_record("same", "b.jpg"), 1))
    assert isinstance(out, QuarantineEntry) and out.reason == "duplicate_id" and out.id == "same"


def test_unparseable_line_is_record_malformed():
    out = Validator(None).check(RawItem(raw="{oops", source="a.jsonl", index=3, line=7, parse_error="not JSON"))
    assert isinstance(out, QuarantineEntry) and out.reason == "record_malformed" and out.line == 7


def test_flag_zero_needs_no_negatives_and_tiny_overshoot_is_clamped():
    rec = make_record("r", "r.jpg", flag=0)
    rec["bbox_info"][0]["bbox"] = [-1e-9, 0.0, 1.0 + 1e-9, 1.0]
    out = Validator(None, validation=ValidationConfig(check_images=False)).check(_item(rec))
    assert isinstance(out, Kept) and out.record.bbox_info[0].bbox == [0.0, 0.0, 1.0, 1.0]


@pytest.fixture
def dataset(tmp_path):
    """One file per image-level problem plus good images in several modes; annotation mistakes too."""
    img = tmp_path / "images"
    img.mkdir()
    files = {
        "good_rgb.jpg": image_bytes(64, 48),
        "good_cmyk.jpg": image_bytes(64, 48, mode="CMYK"),
        "good_l.png": image_bytes(64, 48, mode="L", fmt="PNG"),
        "good_p.png": image_bytes(64, 48, mode="P", fmt="PNG"),
        "good_rgba.png": image_bytes(64, 48, mode="RGBA", fmt="PNG"),
        "good_16.png": image_bytes(64, 48, mode="I;16", fmt="PNG"),
        "good_exif.jpg": image_bytes(64, 32, exif_orientation=8),
        "truncated.jpg": image_bytes(200, 200, seed=1)[:3000],
        "corrupt.jpg": b"GIF89a but then nothing of an image" * 10,
        "huge.png": image_bytes(300, 300, fmt="PNG"),
        "tiny.png": image_bytes(3, 3, fmt="PNG"),
    }
    for name, data in files.items():
        (img / name).write_bytes(data)
    records = [make_record(name.split(".")[0], name) for name in files]
    records.append(make_record("missing", "not_there.jpg"))
    bad_caption = make_record("badcap", "good_rgb.jpg")
    bad_caption["short_caption"] = ""
    records += [bad_caption, make_record("good_rgb", "good_rgb.jpg"), "{broken json"]
    ann = write_jsonl(tmp_path / "ann.jsonl", records)
    return ann, img


def test_validate_run_images_and_counts(dataset, tmp_path):
    ann, img = dataset
    out = tmp_path / "out"
    cfg = DataConfig(validation=ValidationConfig(max_pixels=250 * 250, min_side=8))
    summary = validate_annotations(str(ann), str(img), str(out), cfg)
    s = json.loads((out / "summary.json").read_text())
    q = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    kept = [json.loads(line) for line in (out / "kept.jsonl").read_text().splitlines()]
    reasons = {e["id"] or f"line{e['line']}": e["reason"] for e in q}
    assert reasons == {"truncated": "image_truncated", "corrupt": "image_corrupt", "huge": "image_too_large",
                       "tiny": "image_too_small", "missing": "image_missing", "badcap": "caption_empty",
                       "good_rgb": "duplicate_id", "line15": "record_malformed"}
    assert sorted(r["id"] for r in kept) == sorted(["good_rgb", "good_cmyk", "good_l", "good_p", "good_rgba",
                                                    "good_16", "good_exif"])
    assert s["total"] == 15 == s["kept"] + s["quarantined"] == len(kept) + len(q)
    assert s["quarantined_by_reason"]["image_truncated"] == 1 and summary.kept == 7
    exif = next(r for r in kept if r["id"] == "good_exif")
    assert (exif["width"], exif["height"]) == (32, 64)   # rotated size recorded
    entry = next(e for e in q if e["id"] == "missing")
    assert entry["source"] == str(ann) and entry["line"] == 12 and entry["raw"]["f_path"] == "not_there.jpg"


# ---- property: random records never make validation raise -----------------------------------------
_text = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2))
_num = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.text(max_size=2), st.none())
_region = st.one_of(
    st.fixed_dictionaries({
        "bbox": st.one_of(st.lists(_num, min_size=0, max_size=6), _num),
        "short_expr": _text, "long_expr": _text,
        "flag_short_neg": st.one_of(st.integers(-1, 2), st.booleans(), st.floats(), st.none(), st.text(max_size=1)),
        "short_expr_negs": st.one_of(st.lists(_text, max_size=11),
                                     st.dictionaries(st.text(max_size=2), _text, max_size=11), _text),
    }),
    _text,
)
_record = st.one_of(
    st.fixed_dictionaries({
        "f_path": st.one_of(st.text(max_size=10), st.integers(), st.none()),
        "caption": _text, "short_caption": _text,
        "bbox_info": st.one_of(st.lists(_region, max_size=4), _text),
    }, optional={"id": _text, "width": _num, "height": _num, "provenance": st.one_of(st.dictionaries(
        st.text(max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), max_size=2), _text)}),
    _text,
    st.lists(st.integers(), max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_record, max_size=5))
def test_property_random_records_end_kept_or_quarantined(records):
    v = Validator(None, validation=ValidationConfig(check_images=False))
    for i, raw in enumerate(records):
        out = v.check(_item(copy.deepcopy(raw), i))
        if isinstance(out, Kept):
            assert out.record.caption.strip() and out.record.short_caption.strip()
            assert all(0 <= b <= 1 for r in out.record.bbox_info for b in r.bbox)
        else:
            assert isinstance(out, QuarantineEntry)
            assert out.reason and out.detail and not out.detail.startswith("unexpected error")
