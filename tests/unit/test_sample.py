"""The bundled sample: real photos copied out of installed packages, with hand-written annotations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from fgclip_core.data.records import FineHARDRecord
from fgclip_core.sample import (
    SampleSet,
    SampleSourceError,
    materialize_sample,
    sample_records,
    sample_sources,
)
from fgclip_core.sample import materialize as sample_mod

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
HUMAN = {"backend": "human", "version": "1"}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file under root."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_jsonl_round_trip(sample_set: SampleSet) -> None:
    assert sample_set.images_root.is_dir()
    assert sample_set.images_root.parent == sample_set.annotations_path.parent
    lines = sample_set.annotations_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(sample_set.records) >= 10
    for line, record in zip(lines, sample_set.records, strict=True):
        d = json.loads(line)
        assert d == record.to_dict()
        assert FineHARDRecord.from_dict(d) == record
    # nothing but the images and the annotations, no temp files left behind
    names = {p.name for p in sample_set.images_root.iterdir()}
    assert names == {r.f_path for r in sample_set.records}


def test_every_image_exists_opens_and_matches_its_size(sample_set: SampleSet) -> None:
    modes = set()
    for record in sample_set.records:
        path = sample_set.image_path(record)
        assert path.is_file(), path
        with Image.open(path) as im:
            im.load()
            assert im.size == (record.width, record.height), record.id
            modes.add((im.format, im.mode))
    # the data layer's mode conversion is exercised by real files
    assert ("PNG", "L") in modes
    assert ("PNG", "RGBA") in modes
    assert ("JPEG", "RGB") in modes


def test_ids_are_webdataset_safe_and_unique(sample_set: SampleSet) -> None:
    ids = [r.id for r in sample_set.records]
    assert len(set(ids)) == len(ids)
    for record in sample_set.records:
        assert KEY_RE.match(record.id), record.id
        assert Path(record.f_path).stem == record.id
        assert "/" not in record.f_path


def test_captions_are_long_short_and_non_empty(sample_set: SampleSet) -> None:
    captions = set()
    for record in sample_set.records:
        n_words = len(record.caption.split())
        assert 60 <= n_words <= 150, (record.id, n_words)
        assert 0 < len(record.short_caption.split()) <= 20, record.id
        assert record.caption.strip() == record.caption
        captions.add(record.caption)
    assert len(captions) == len(sample_set.records)


def test_boxes_are_normalised_and_well_formed(sample_set: SampleSet) -> None:
    for record in sample_set.records:
        assert 2 <= len(record.bbox_info) <= 4, record.id
        for region in record.bbox_info:
            x1, y1, x2, y2 = region.bbox
            assert all(0.0 <= v <= 1.0 for v in region.bbox), (record.id, region.bbox)
            assert x1 < x2 and y1 < y2, (record.id, region.bbox)
            # at least a couple of pixels wide and high: a real object, not a rounding artefact
            assert (x2 - x1) * record.width >= 8 and (y2 - y1) * record.height >= 8, (record.id, region.bbox)
            assert region.short_expr.strip() and region.long_expr.strip()


def test_ten_distinct_hard_negatives_per_region(sample_set: SampleSet) -> None:
    for record in sample_set.records:
        for region in record.bbox_info:
            negs = region.short_expr_negs
            assert region.flag_short_neg == 1
            assert len(negs) == 10, region.short_expr
            assert all(isinstance(n, str) and n.strip() == n and n for n in negs)
            folded = {n.casefold() for n in negs}
            assert len(folded) == 10, region.short_expr
            assert region.short_expr.casefold() not in folded, region.short_expr


def test_provenance_says_human(sample_set: SampleSet) -> None:
    for record in sample_set.records:
        for field in ("caption", "short_caption", "bbox_info", "short_expr_negs"):
            assert record.provenance[field] == HUMAN
        for region in record.bbox_info:
            assert region.provenance["bbox"] == HUMAN
            assert region.provenance["short_expr_negs"] == HUMAN


def test_sources_span_the_three_packages() -> None:
    sources = sample_sources()
    assert {s.distribution for s in sources.values()} == {"scikit-image", "scikit-learn", "matplotlib"}
    assert [r.id for r in sample_records()] == list(sources)


def test_materialisation_is_idempotent(tmp_path: Path) -> None:
    first = materialize_sample(tmp_path)
    before = _tree(tmp_path)
    second = materialize_sample(tmp_path)
    assert _tree(tmp_path) == before  # nothing copied or rewritten
    assert second == first


def test_materialisation_repairs_a_damaged_copy(tmp_path: Path) -> None:
    sample = materialize_sample(tmp_path)
    victim = sample.image_path(sample.records[0])
    original = victim.read_bytes()
    victim.write_bytes(original[: len(original) // 2])
    sample.annotations_path.write_text("garbage\n", encoding="utf-8")
    again = materialize_sample(tmp_path)
    assert victim.read_bytes() == original
    assert again.annotations_path.read_text(encoding="utf-8").count("\n") == len(again.records)


def test_missing_package_names_package_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = sample_mod.find_spec

    def no_sklearn(name: str, *args: object):
        return None if name == "sklearn" else real_find_spec(name, *args)

    monkeypatch.setattr(sample_mod, "find_spec", no_sklearn)
    with pytest.raises(SampleSourceError) as err:
        materialize_sample(tmp_path)
    msg = str(err.value)
    assert "scikit-learn" in msg and "china.jpg" in msg and "not installed" in msg
    # it fails before copying anything
    assert not (tmp_path / "images").exists()


def test_missing_file_names_package_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_pkg = tmp_path / "fake_site" / "matplotlib"
    empty_pkg.mkdir(parents=True)
    real_package_dir = sample_mod._package_dir
    monkeypatch.setattr(
        sample_mod, "_package_dir", lambda m: empty_pkg if m == "matplotlib" else real_package_dir(m)
    )
    with pytest.raises(SampleSourceError) as err:
        materialize_sample(tmp_path / "out")
    msg = str(err.value)
    assert "matplotlib" in msg and "grace_hopper.jpg" in msg and "missing" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_a_different_picture_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pkg = tmp_path / "fake_site" / "matplotlib"
    target = fake_pkg / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    target.parent.mkdir(parents=True)
    Image.new("RGB", (64, 48), "red").save(target)
    real_package_dir = sample_mod._package_dir
    monkeypatch.setattr(
        sample_mod, "_package_dir", lambda m: fake_pkg if m == "matplotlib" else real_package_dir(m)
    )
    with pytest.raises(SampleSourceError, match=r"grace_hopper\.jpg.*64x48"):
        materialize_sample(tmp_path / "out")


def test_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fgclip_core.sample.__main__ import main

    assert main([str(tmp_path)]) == 0
    assert "images" in capsys.readouterr().out
    assert main([]) == 2
