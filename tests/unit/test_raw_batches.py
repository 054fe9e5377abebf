"""The raw source: the sample as two landing batches, listing batches, and the immutable batch copy."""

import os

import pytest

from fgclip_core.annotate.raw_batches import list_batches, snapshot_batch
from fgclip_core.sample.batches import land_sample_batch


def test_the_sample_lands_as_two_batches_once(tmp_path):
    raw = tmp_path / "raw"
    one = land_sample_batch(str(raw), 1)
    two = land_sample_batch(str(raw), 2)
    names = lambda d: sorted(p.name for p in (raw / d).iterdir())  # noqa: E731
    assert len(names("batch-0001")) == 7 + 1 and len(names("batch-0002")) == 6 + 1
    assert not set(names("batch-0001")) & set(names("batch-0002")) - {"metadata.jsonl"}
    assert len((raw / "batch-0002" / "metadata.jsonl").read_text().splitlines()) == 6
    before = (raw / "batch-0001" / "metadata.jsonl").stat().st_mtime_ns
    assert land_sample_batch(str(raw), 1) == one and one.endswith("batch-0001") and two.endswith("batch-0002")
    assert (raw / "batch-0001" / "metadata.jsonl").stat().st_mtime_ns == before
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError, match=r"batches 1\.\.2"):
        land_sample_batch(str(raw), 3)


def test_list_batches_skips_landing_and_bad_names_and_fingerprints_content(tmp_path):
    raw = tmp_path / "raw"
    land_sample_batch(str(raw), 1)
    for name in (".batch-2.landing", "_private", "bad name"):
        (raw / name).mkdir()
    (raw / "a-file.txt").write_text("not a batch")
    first = list_batches(str(raw))
    assert list(first) == ["batch-0001"]
    (raw / "batch-0001" / "new.png").write_bytes(b"x")
    assert list_batches(str(raw))["batch-0001"] != first["batch-0001"]
    assert list_batches(str(tmp_path / "missing")) == {}


def test_snapshot_copies_images_and_metadata_only_and_stays_inside(tmp_path):
    raw = tmp_path / "raw"
    land_sample_batch(str(raw), 2)
    batch = raw / "batch-0002"
    (batch / "notes.txt").write_text("ignored")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"outside the batch")
    os.symlink(secret, batch / "link.png")
    snap = snapshot_batch(str(batch), str(tmp_path / "copy"))
    assert (snap.images, snap.metadata_rows, snap.ignored_files) == (6, 6, 1)
    copied = sorted(p.name for p in (tmp_path / "copy").iterdir())
    assert "link.png" not in copied and "notes.txt" not in copied and "metadata.jsonl" in copied
    again = snapshot_batch(str(batch), str(tmp_path / "copy2"))
    assert again.sha256 == snap.sha256 and len(snap.sha256) == 64


def test_metadata_lines_no_image_can_match_are_left_out_and_reported(tmp_path):
    raw = tmp_path / "raw"
    land_sample_batch(str(raw), 2)
    meta = raw / "batch-0002" / "metadata.jsonl"
    good = meta.read_bytes()
    meta.write_bytes(good + b"{broken\n" + b'{"caption": "no key"}\n' + b"\xff\xfe\n" + b"[1, 2]\n")
    snap = snapshot_batch(str(raw / "batch-0002"), str(tmp_path / "copy"))
    assert snap.metadata_rows == 6 and (tmp_path / "copy" / "metadata.jsonl").read_bytes() == good
    assert [r["line"] for r in snap.metadata_rejected] == [7, 8, 9, 10]
    assert [r["reason"].split(":")[0] for r in snap.metadata_rejected] == [
        "not JSON", "needs a 'file_name' or 'f_path' string", "not UTF-8", "needs a 'file_name' or 'f_path' string"]
