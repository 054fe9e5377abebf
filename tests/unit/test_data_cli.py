"""`fgclip data validate` / `build-shards`: outputs, summary table, exit codes."""

from __future__ import annotations

import json

from click.testing import CliRunner

from fgclip_core.cli import cli
from fgclip_core.data.shards import read_manifest
from tests.fixtures.data import make_record, write_images, write_jsonl


def _inputs(tmp_path, good=3):
    img = tmp_path / "images"
    names = write_images(img, good)
    recs = [make_record(n.split(".")[0], n) for n in names] + [make_record("lost", "lost.jpg")]
    return write_jsonl(tmp_path / "ann.jsonl", recs), img


def test_validate_writes_outputs_and_exits_zero_with_quarantine(tmp_path):
    ann, img = _inputs(tmp_path)
    out = tmp_path / "v"
    r = CliRunner().invoke(cli, ["data", "validate", "--annotations", str(ann), "--images", str(img), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "image_missing" in r.output and "kept" in r.output
    s = json.loads((out / "summary.json").read_text())
    assert (s["total"], s["kept"], s["quarantined"]) == (4, 3, 1)
    assert len((out / "kept.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "quarantine.jsonl").read_text())["reason"] == "image_missing"


def test_build_shards_cli(tmp_path):
    ann, img = _inputs(tmp_path, good=5)
    out = tmp_path / "s"
    r = CliRunner().invoke(cli, ["data", "build-shards", "--annotations", str(ann), "--images", str(img),
                                 "--out", str(out), "--samples-per-shard", "2"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["num_shards"] == 3 and m["total_samples"] == 5
    assert (out / "quarantine.jsonl").exists() and "shards" in r.output


def test_nothing_usable_exits_nonzero_with_reason(tmp_path):
    ann = write_jsonl(tmp_path / "a.jsonl", [make_record("x", "x.jpg"), "{bad"])
    for cmd in ("validate", "build-shards"):
        r = CliRunner().invoke(cli, ["data", cmd, "--annotations", str(ann), "--images", str(tmp_path),
                                     "--out", str(tmp_path / cmd)])
        assert r.exit_code != 0 and "no usable record" in r.output, r.output


def test_unwritable_destination_exits_nonzero(tmp_path):
    ann, img = _inputs(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = CliRunner().invoke(cli, ["data", "build-shards", "--annotations", str(ann), "--images", str(img),
                                 "--out", str(blocker / "sub")])
    assert r.exit_code != 0 and "cannot be written" in r.output, r.output


def test_bad_config_override_is_reported(tmp_path):
    ann, img = _inputs(tmp_path)
    r = CliRunner().invoke(cli, ["data", "validate", "--annotations", str(ann), "--images", str(img),
                                 "--out", str(tmp_path / "o"), "--set", "validation.min_sidez=3"])
    assert r.exit_code != 0 and "min_sidez" in r.output


def test_verify_cli(tmp_path):
    ann, img = _inputs(tmp_path, good=4)
    out = tmp_path / "s"
    CliRunner().invoke(cli, ["data", "build-shards", "--annotations", str(ann), "--images", str(img),
                             "--out", str(out), "--samples-per-shard", "2"])
    ok = CliRunner().invoke(cli, ["data", "verify", "--shards", str(out)])
    assert ok.exit_code == 0 and "all match" in ok.output, ok.output
    name = read_manifest(str(out)).shards[1].name
    p = out / name
    p.write_bytes(p.read_bytes()[:-1024])
    bad = CliRunner().invoke(cli, ["data", "verify", "--shards", str(out)])
    assert bad.exit_code != 0 and name in bad.output


def test_official_json_with_custom_prefix(tmp_path):
    img = tmp_path / "images" / "coyo_image_0"
    names = write_images(img, 2)
    official = []
    for n in names:
        r = make_record("ignored", n)
        del r["id"]   # the official layout has no ids
        r["f_path"] = f"mirror/data/coyo_image_0/{n}"
        for reg in r["bbox_info"]:
            reg["bbox"] = [*reg["bbox"], 0.9]
            reg["short_expr_negs"] = {str(i): t for i, t in enumerate(reg["short_expr_negs"])}
        official.append(r)
    ann = tmp_path / "official.json"
    ann.write_text(json.dumps(official))
    out = tmp_path / "v"
    r = CliRunner().invoke(cli, ["data", "validate", "--annotations", str(ann), "--images", str(tmp_path / "images"),
                                 "--out", str(out), "--strip-prefix", "mirror/data/"])
    assert r.exit_code == 0, r.output
    kept = [json.loads(line) for line in (out / "kept.jsonl").read_text().splitlines()]
    assert [k["id"].rsplit("-", 1)[0] for k in kept] == ["coyo_image_0_img000", "coyo_image_0_img001"]
    assert kept[0]["bbox_info"][0]["score"] == 0.9 and len(kept[0]["bbox_info"][0]["bbox"]) == 4
