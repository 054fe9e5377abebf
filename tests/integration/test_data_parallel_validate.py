"""Image checks in a process pool give byte-identical outputs to the single-process run."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fgclip_core.cli import cli
from tests.fixtures.data import image_bytes, make_record, write_images, write_jsonl

pytestmark = pytest.mark.integration


def test_workers_2_equals_workers_1(tmp_path):
    img = tmp_path / "images"
    names = write_images(img, 9)
    (img / "bad.jpg").write_bytes(image_bytes(100, 100)[:500])
    recs = [make_record(n.split(".")[0], n) for n in names]
    recs += [make_record("bad", "bad.jpg"), make_record("img003", "img004.jpg"), make_record("gone", "gone.jpg")]
    ann = write_jsonl(tmp_path / "ann.jsonl", recs)
    outs = {}
    for w in (1, 2):
        out = tmp_path / f"shards{w}"
        r = CliRunner().invoke(cli, ["data", "build-shards", "--annotations", str(ann), "--images", str(img),
                                     "--out", str(out), "--samples-per-shard", "4", "--workers", str(w)])
        assert r.exit_code == 0, r.output
        outs[w] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert outs[1] == outs[2]
    q = outs[2]["quarantine.jsonl"].decode()
    assert "image_truncated" in q and "duplicate_id" in q and "image_missing" in q
