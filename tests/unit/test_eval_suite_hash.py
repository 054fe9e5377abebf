"""The benchmark-set hash: equal for the same files wherever they lie, different when any file changes."""

import shutil

from fgclip_core.eval import load_suite_file, write_sample_suite
from fgclip_core.eval.suite_hash import suite_sha256


def test_same_content_same_hash_any_change_another(sample_set, tmp_path):
    a = load_suite_file(write_sample_suite(sample_set, tmp_path / "a")).benchmarks
    b = load_suite_file(write_sample_suite(sample_set, tmp_path / "b")).benchmarks
    assert suite_sha256(a) == suite_sha256(b)
    data = tmp_path / "b" / "fgovd_sample.jsonl"
    data.write_text(data.read_text().replace("a", "b", 1))
    assert suite_sha256(a) != suite_sha256(b)
    images = tmp_path / "imgs"
    shutil.copytree(sample_set.images_root, images)
    moved = [s.model_copy(update={"images": str(images)}) if s.images else s for s in a]
    assert suite_sha256(moved) == suite_sha256(a)   # the images' location never enters the hash
    next(images.iterdir()).write_bytes(b"changed")
    assert suite_sha256(moved) != suite_sha256(a)
