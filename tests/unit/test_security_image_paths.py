"""Issue 14, section 3: no file outside the image root, no file that is not a regular file, no
unbounded read. Each refusal quarantines its record with a machine-readable reason; the good
records all survive (library and CLI, validate and build-shards)."""

from __future__ import annotations

import json
import os
import tarfile

import pytest
from click.testing import CliRunner

from fgclip_core.annotate.images import ImageLoadError, list_images, load_image
from fgclip_core.cli import cli
from fgclip_core.data.config import DataConfig, ShardConfig, ValidationConfig
from fgclip_core.data.errors import Reason, RecordError
from fgclip_core.data.io import record_from_raw
from fgclip_core.data.paths import ImageRoot, check_relative_path
from fgclip_core.data.pipeline import build_shards, validate_annotations
from tests.fixtures.data import image_bytes, make_record, write_images, write_jsonl

GOOD = 13
SPARSE_BYTES = 3 * (1 << 29)   # 1.5 GiB, nearly all of it a hole


def _hostile_tree(tmp_path):
    """13 good images and one record per hostile path; returns (annotations, root, {id: reason})."""
    root = tmp_path / "images"
    names = write_images(root, GOOD)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(image_bytes(seed=99))        # a *valid* image outside the root
    os.symlink("/", root / "rootlink")
    os.symlink("../outside/secret.jpg", root / "escape.jpg")
    os.symlink(str(outside), root / "outdir")
    os.symlink("/dev/zero", root / "zero.jpg")
    os.mkfifo(root / "fifo.jpg")
    with open(root / "sparse.jpg", "wb") as fh:
        fh.write(image_bytes(seed=5)[:600])                            # a JPEG header, then a hole
        fh.truncate(SPARSE_BYTES)
    (root / "folder.jpg").mkdir()
    os.symlink("img000.jpg", root / "inside_link.jpg")                 # a link that stays inside: fine
    bad = {
        "rootlink": ("rootlink/etc/passwd", Reason.IMAGE_OUTSIDE_ROOT),
        "escape": ("escape.jpg", Reason.IMAGE_OUTSIDE_ROOT),
        "outdir": ("outdir/secret.jpg", Reason.IMAGE_OUTSIDE_ROOT),
        "zero": ("zero.jpg", Reason.IMAGE_OUTSIDE_ROOT),
        "dotdot": ("../outside/secret.jpg", Reason.IMAGE_OUTSIDE_ROOT),
        "dotdot_backslash": ("sub\\..\\..\\outside\\secret.jpg", Reason.IMAGE_OUTSIDE_ROOT),
        "absolute": (str(outside / "secret.jpg"), Reason.IMAGE_OUTSIDE_ROOT),
        "url": ("s3://other-bucket/secret.jpg", Reason.IMAGE_OUTSIDE_ROOT),
        "file_url": (f"file://{outside}/secret.jpg", Reason.IMAGE_OUTSIDE_ROOT),
        "fifo": ("fifo.jpg", Reason.IMAGE_NOT_REGULAR_FILE),
        "folder": ("folder.jpg", Reason.IMAGE_NOT_REGULAR_FILE),
        "sparse": ("sparse.jpg", Reason.IMAGE_TOO_LARGE),
    }
    records = [make_record(n.split(".")[0], n) for n in names]
    records.append(make_record("inside_link", "inside_link.jpg"))
    records += [make_record(rid, f_path) for rid, (f_path, _) in bad.items()]
    ann = write_jsonl(tmp_path / "ann.jsonl", records)
    return ann, root, {rid: reason.value for rid, (_, reason) in bad.items()}


def _read_out(out):
    kept = [json.loads(x) for x in (out / "kept.jsonl").read_text().splitlines()] if (out / "kept.jsonl").exists() else []
    q = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    return kept, q


pytestmark = pytest.mark.timeout(120)   # a FIFO that is opened would hang: fail instead


def test_validate_refuses_every_hostile_path_and_keeps_the_good(tmp_path):
    ann, root, expected = _hostile_tree(tmp_path)
    out = tmp_path / "v"
    summary = validate_annotations(str(ann), str(root), str(out))
    kept, q = _read_out(out)
    assert {e["id"]: e["reason"] for e in q} == expected
    assert sorted(r["id"] for r in kept) == sorted([f"img{i:03d}" for i in range(GOOD)] + ["inside_link"])
    assert summary.kept == GOOD + 1 and summary.total == GOOD + 1 + len(expected)
    details = {e["id"]: e["detail"] for e in q}
    assert "outside the image root" in details["rootlink"] and "named pipe" in details["fifo"]
    assert f"{SPARSE_BYTES} bytes > max_image_bytes" in details["sparse"]
    assert "passwd" not in (out / "kept.jsonl").read_text()


def test_build_shards_holds_no_byte_from_outside_the_root(tmp_path):
    ann, root, expected = _hostile_tree(tmp_path)
    out = tmp_path / "shards"
    res = build_shards(str(ann), str(root), str(out), DataConfig(shards=ShardConfig(samples_per_shard=5)))
    assert res.summary.kept == GOOD + 1 and dict(res.summary.by_reason) == {
        r: list(expected.values()).count(r) for r in set(expected.values())}
    secret = (tmp_path / "outside" / "secret.jpg").read_bytes()
    keys = []
    for s in res.manifest.shards:
        with tarfile.open(out / s.name) as tar:
            for m in tar.getmembers():
                keys.append(m.name.split(".", 1)[0])
                assert tar.extractfile(m).read() != secret   # type: ignore[union-attr]
    assert len(set(keys)) == GOOD + 1


@pytest.mark.parametrize("cmd", ["validate", "build-shards"])
def test_cli_quarantines_hostile_paths_with_reasons(tmp_path, cmd):
    ann, root, expected = _hostile_tree(tmp_path)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["data", cmd, "--annotations", str(ann), "--images", str(root), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and "image_outside_root" in r.output and "image_not_regular_file" in r.output
    q = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    assert {e["id"]: e["reason"] for e in q} == expected


def test_size_limit_comes_from_config_and_is_checked_before_reading(tmp_path):
    root = tmp_path / "images"
    write_images(root, 2)
    size = (root / "img000.jpg").stat().st_size
    ann = write_jsonl(tmp_path / "a.jsonl", [make_record("a", "img000.jpg"), make_record("b", "img001.jpg")])
    cfg = DataConfig(validation=ValidationConfig(max_image_bytes=size - 1))
    summary = validate_annotations(str(ann), str(root), str(tmp_path / "v"), cfg)
    assert summary.by_reason["image_too_large"] >= 1
    with pytest.raises(RecordError) as e:
        ImageRoot(str(root), size - 1).read("img000.jpg")
    assert e.value.reason == Reason.IMAGE_TOO_LARGE and str(size) in e.value.detail
    assert len(ImageRoot(str(root), size).read("img000.jpg")) == size


def test_device_inside_the_root_is_not_a_regular_file():
    with pytest.raises(RecordError) as e:
        ImageRoot("/dev", 1 << 20).read("zero")
    assert e.value.reason == Reason.IMAGE_NOT_REGULAR_FILE and "device" in e.value.detail


def test_root_that_is_itself_a_symlink_still_reads_inside(tmp_path):
    real = tmp_path / "real"
    write_images(real, 1)
    os.symlink(real, tmp_path / "link")
    assert ImageRoot(str(tmp_path / "link"), 1 << 20).read("img000.jpg") == (real / "img000.jpg").read_bytes()


def test_no_root_means_the_current_folder(tmp_path, monkeypatch):
    write_images(tmp_path, 1)
    monkeypatch.chdir(tmp_path)
    assert ImageRoot(None, 1 << 20).read("img000.jpg")
    with pytest.raises(RecordError) as e:
        ImageRoot(None, 1 << 20).read(str(tmp_path / "img000.jpg"))
    assert e.value.reason == Reason.IMAGE_OUTSIDE_ROOT


@pytest.mark.parametrize("f_path", ["../x.jpg", "a/../../x.jpg", "a\\..\\..\\x.jpg", "/abs/x.jpg",
                                    "s3://other-bucket/x.jpg", "http://host/x.jpg", "\\\\server\\x.jpg"])
def test_s3_keys_that_leave_the_prefix_are_refused_before_any_request(f_path):
    # no S3 server here: the refusal must come from the path alone
    root = ImageRoot("s3://bucket/images", 1 << 20)
    with pytest.raises(RecordError) as e:
        root.read(f_path)
    assert e.value.reason == Reason.IMAGE_OUTSIDE_ROOT and root._fs is None
    with pytest.raises(RecordError):
        record_from_raw({"f_path": f_path, "caption": "c", "short_caption": "s"})


def test_check_relative_path_accepts_ordinary_paths():
    for ok in ["a.jpg", "a/b/c.png", "./a.jpg", "dir.with.dots/x..y.jpg", "a//b.jpg"]:
        check_relative_path(ok)
    with pytest.raises(RecordError) as e:
        check_relative_path("a\x00.jpg")
    assert e.value.reason == Reason.RECORD_MALFORMED


def test_annotate_reads_through_the_same_guard(tmp_path):
    _, root, _ = _hostile_tree(tmp_path)
    refs = {r.f_path: r for r in list_images(str(root), [".jpg"])}
    assert load_image(refs["inside_link.jpg"], 64, 10**8).width == 64
    for name, reason in [("escape.jpg", "image_outside_root"), ("zero.jpg", "image_outside_root"),
                         ("fifo.jpg", "image_not_regular_file"), ("sparse.jpg", "image_too_large")]:
        with pytest.raises(ImageLoadError, match=reason):
            load_image(refs[name], 64, 10**8)


def test_sidecar_caption_that_links_outside_is_refused(tmp_path):
    from fgclip_core.annotate.captions import SidecarCaptioner
    from fgclip_core.annotate.config import CaptionConfig

    root = tmp_path / "images"
    write_images(root, 2)
    (tmp_path / "secret.txt").write_text("root:x:0:0:root:/root:/bin/bash")
    os.symlink(tmp_path / "secret.txt", root / "img000.txt")
    (root / "img001.txt").write_text("A gradient with some noise on it.")
    loaded = [load_image(r, 64, 10**8) for r in list_images(str(root), [".jpg"])]
    out = SidecarCaptioner(CaptionConfig(), str(root)).caption(loaded)
    assert out[0].error and "image_outside_root" in out[0].error and not out[0].caption
    assert out[1].caption == "A gradient with some noise on it."


def test_eval_images_are_read_bounded_and_only_from_regular_files(tmp_path, caplog):
    from fgclip_core.eval import io as eval_io

    _, root, _ = _hostile_tree(tmp_path)
    assert eval_io.read_image_bytes(str(root / "img000.jpg")) == (root / "img000.jpg").read_bytes()
    assert eval_io.read_image_bytes(str(root / "inside_link.jpg"))          # an ordinary symlink still reads
    assert eval_io.read_image_bytes(str(root / "gone.jpg")) is None
    for name in ["zero.jpg", "fifo.jpg", "sparse.jpg", "folder.jpg"]:
        assert eval_io.read_image_bytes(str(root / name)) is None
    refused = [r.getMessage() for r in caplog.records if "image refused" in r.getMessage()]
    assert len(refused) == 4 and any("image_too_large" in m for m in refused)
