"""Published figures: validated data, a release found by fingerprint, compared only under its protocol."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fgclip_core.config import ConfigError
from fgclip_core.eval.paper import (
    PaperNumbers,
    compare_with_paper,
    format_metric,
    load_paper_numbers,
    paper_section,
    release_for,
)

FP = "0123456789abcdef" + "f" * 48

NUMBERS = PaperNumbers.model_validate({"releases": {"r": {
    "model": "m", "source": "s", "fingerprints": [FP[:16]], "figures": {"b/accuracy": 40.0, "b/top1": 10.0}}}})


def result(protocol="official", **metrics):
    return SimpleNamespace(benchmark="b", metrics=metrics, protocol={"name": protocol, "settings": {}})


def test_release_is_found_by_a_fingerprint_prefix_of_16_or_more():
    assert release_for(FP, NUMBERS)[0] == "r"
    assert release_for("f" * 64, NUMBERS) is None
    short = PaperNumbers.model_validate({"releases": {"r": {"model": "m", "source": "s", "fingerprints": ["0123"]}}})
    assert release_for(FP, short) is None  # a short prefix could match anything


def test_comparison_in_percent_and_only_under_the_release_protocol():
    rows = compare_with_paper([result(accuracy=0.425)], NUMBERS.releases["r"])
    assert rows == {"b/accuracy": {"paper": 40.0, "ours": 42.5, "diff": pytest.approx(2.5)}}
    assert compare_with_paper([result("clip_benchmark", accuracy=0.425)], NUMBERS.releases["r"]) == {}
    section = paper_section([result(accuracy=0.425)], FP, NUMBERS)
    assert section["release"] == "r" and section["matched_by"] == "fingerprint"
    assert section["metrics"] == {k: {**v, "table": ""} for k, v in rows.items()}
    assert format_metric("b", "accuracy", 0.425, section) == "accuracy=42.50 (paper 40.00, +2.50)"
    assert format_metric("b", "top5", 0.5, section) == "top5=50.00"


def test_a_named_release_is_compared_whatever_the_fingerprint_and_an_unknown_name_is_refused():
    other = "f" * 64  # not listed for "r": a converted or fine-tuned copy has other bytes
    assert paper_section([result(accuracy=0.425)], other, NUMBERS) is None
    section = paper_section([result(accuracy=0.425)], other, NUMBERS, release="r")
    assert section["release"] == "r" and section["matched_by"] == "setting"
    assert section["metrics"]["b/accuracy"]["paper"] == 40.0
    with pytest.raises(ValueError, match=r"'nope'.*known: r"):
        paper_section([result(accuracy=0.425)], FP, NUMBERS, release="nope")


def test_bad_paper_files_are_refused_with_the_file_named(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("releases: {r: {model: m, source: s, figures: {'b/accuracy': 140}}}\n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_paper_numbers(bad)
    bad.write_text("releases: {r: {model: m, figures: {}}}\n")
    with pytest.raises(ConfigError, match="source"):
        load_paper_numbers(bad)


# Metrics each suite reports (fgclip_core/eval/suites/*.py): what a published figure may be keyed by.
SUITE_METRICS = {
    "fgovd": r"accuracy(/[\w-]+)?",
    "long-retrieval": r"(i2t|t2i)_R@\d+",
    "short-retrieval": r"(i2t|t2i)_R@\d+",
    "zeroshot": r"top\d+|mean_per_class_recall",
    "box-cls": r"top\d+",
}


def example_benchmarks() -> dict[str, str]:
    from importlib import resources

    from fgclip_core.eval.config import load_suite_file

    path = resources.files("fgclip_core.eval").joinpath("templates/benchmarks.example.yaml")
    return {b.name: b.suite for b in load_suite_file(str(path)).benchmarks}


def bad_figures(numbers: PaperNumbers, benchmarks: dict[str, str]) -> list[str]:
    """Figures whose key names no benchmark of the example file, or a metric its suite does not report,
    or whose value is no percent."""
    import re

    bad = []
    for name, rel in numbers.releases.items():
        for key, value in rel.figures.items():
            bench, _, metric = key.partition("/")
            suite = benchmarks.get(bench)
            if suite is None or not re.fullmatch(SUITE_METRICS[suite], metric) or not 0.0 <= value <= 100.0:
                bad.append(f"{name}: {key}")
    return bad


def test_shipped_figures_name_example_benchmarks_and_their_suites_metrics():
    benchmarks = example_benchmarks()
    assert set(benchmarks.values()) <= set(SUITE_METRICS)
    numbers = load_paper_numbers()
    assert bad_figures(numbers, benchmarks) == []
    # the check does catch a key the example file does not name, and a metric the suite does not report
    wrong = PaperNumbers.model_validate({"releases": {"r": {"model": "m", "source": "s", "figures": {
        "fgovd-hard/accuracy": 46.0, "fg-ovd-hard/accuracy": 46.0, "coco-5k/top1": 50.0,
        "imagenet-1k/top1": 70.0, "dci/t2i_R@1": 60.0}}}})
    assert bad_figures(wrong, benchmarks) == ["r: fg-ovd-hard/accuracy", "r: coco-5k/top1"]


def test_every_shipped_figure_names_its_table_and_how_it_was_read():
    for name, rel in load_paper_numbers().releases.items():
        assert set(rel.tables) == set(rel.figures), name
        assert all(rel.tables.values()), name
        assert not rel.figures or rel.transcribed_from, name
