"""`fgclip eval all` prints the paper's figure and the difference next to each metric of a known release
(issue 12, section 3). The release here is the tiny test checkpoint, whose "paper numbers" the fixture
writes; the shipped file's releases are recognised the same way, by fingerprint."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from click.testing import CliRunner

from fgclip_core.cli import cli
from fgclip_core.eval import sample_benchmarks as L
from fgclip_core.eval.cache import fingerprint_dir
from fgclip_core.eval.paper import load_paper_numbers

pytestmark = pytest.mark.integration


@pytest.fixture
def paper_file(tiny_checkpoint_dir, tmp_path):
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump({"releases": {"tiny-release": {
        "model": "tiny FG-CLIP", "source": "this test", "protocol": "official",
        "fingerprints": [fingerprint_dir(str(tiny_checkpoint_dir))[:16]],
        "figures": {"fgovd-sample/accuracy": 50.0, "coco-sample/i2t_R@1": 12.5,
                    "not-evaluated/accuracy": 99.0}}}}))
    return path


def test_eval_all_prints_paper_figures_and_differences(tiny_checkpoint_dir, sample_set, paper_file, tmp_path):
    suite = L.write_sample_suite(sample_set, tmp_path / "bench")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["eval", "all", "--model", str(tiny_checkpoint_dir), "--data", str(suite),
                                 "--output", str(out), "--no-progress", "--set", f"paper_numbers={paper_file}"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "metrics.json").read_text())
    paper = summary["paper"]
    assert paper["release"] == "tiny-release" and paper["source"] == "this test"
    assert set(paper["metrics"]) == {"fgovd-sample/accuracy", "coco-sample/i2t_R@1"}  # only what ran
    for key, row in paper["metrics"].items():
        ours = 100 * summary["metrics"][key]
        assert row["ours"] == pytest.approx(ours) and row["diff"] == pytest.approx(ours - row["paper"])
    fg = paper["metrics"]["fgovd-sample/accuracy"]
    line = next(ln for ln in r.output.splitlines() if ln.startswith("fgovd-sample"))
    assert re.search(rf"accuracy={fg['ours']:.2f} \(paper 50\.00, {fg['diff']:+.2f}\)", line), line
    coco = next(ln for ln in r.output.splitlines() if ln.startswith("coco-sample"))
    assert "(paper 12.50," in coco and "i2t_R@5=" in coco and coco.count("(paper") == 1
    assert "paper figures: tiny FG-CLIP (this test)" in r.output


def test_a_model_that_is_no_known_release_gets_no_paper_column(tiny_checkpoint_dir, sample_set, tmp_path):
    suite = L.write_sample_suite(sample_set, tmp_path / "bench")
    r = CliRunner().invoke(cli, ["eval", "all", "--model", str(tiny_checkpoint_dir), "--data", str(suite),
                                 "--output", str(tmp_path / "out"), "--no-progress"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "(paper" not in r.output and "paper" not in json.loads((tmp_path / "out" / "metrics.json").read_text())


def test_shipped_paper_numbers_file_is_valid_and_names_its_source():
    numbers = load_paper_numbers()
    assert set(numbers.releases) == {"fg-clip-base", "fg-clip-large"}
    assert all("2505.05071" in rel.source and rel.protocol == "official" for rel in numbers.releases.values())


def renamed_suite(sample_set, dest, names: dict[str, str]):
    """The sample suite with some entries renamed (e.g. the sample FG-OVD file as ``fgovd-hard``), so that
    the shipped release figures, keyed by the example file's benchmark names, apply to it."""
    path = L.write_sample_suite(sample_set, dest)
    suite = yaml.safe_load(path.read_text())
    suite["benchmarks"] = [{**b, "name": names[b["name"]]} for b in suite["benchmarks"] if b["name"] in names]
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def test_paper_flag_compares_with_a_shipped_release_whatever_the_fingerprint(tiny_checkpoint_dir, sample_set,
                                                                              tmp_path):
    shipped = load_paper_numbers().releases["fg-clip-base"]
    assert "fgovd-hard/accuracy" in shipped.figures and "coco-boxes/top1" in shipped.figures
    suite = renamed_suite(sample_set, tmp_path / "bench", {"fgovd-sample": "fgovd-hard", "boxes-sample": "coco-boxes"})
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["eval", "all", "--model", str(tiny_checkpoint_dir), "--data", str(suite),
                                 "--output", str(out), "--no-progress", "--paper", "fg-clip-base"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    paper = json.loads((out / "metrics.json").read_text())["paper"]
    assert paper["release"] == "fg-clip-base" and paper["matched_by"] == "setting"
    assert set(paper["metrics"]) == {"fgovd-hard/accuracy", "coco-boxes/top1"}
    for key, row in paper["metrics"].items():
        assert row["paper"] == shipped.figures[key] and row["table"] == shipped.tables[key]
    fg = next(ln for ln in r.output.splitlines() if ln.startswith("fgovd-hard"))
    assert f"(paper {shipped.figures['fgovd-hard/accuracy']:.2f}, " in fg
    assert "release chosen by setting" in r.output and "figures read from:" in r.output


def test_an_unknown_paper_release_is_one_line_before_any_model_is_read(sample_set, tmp_path):
    suite = L.write_sample_suite(sample_set, tmp_path / "bench")
    r = CliRunner().invoke(cli, ["eval", "all", "--model", str(tmp_path / "no-such-model"), "--data", str(suite),
                                 "--output", str(tmp_path / "out"), "--no-progress", "--paper", "fg-clip-huge"])
    assert r.exit_code != 0
    assert "'fg-clip-huge'" in r.output and "fg-clip-base" in r.output and "no-such-model" not in r.output
    assert "Traceback" not in r.output
