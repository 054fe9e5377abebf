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
