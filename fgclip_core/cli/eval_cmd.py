"""`fgclip eval SUITE --model DIR --data PATH --images ROOT --output DIR [--baseline DIR]`.

SUITE is one of fgovd, long-retrieval, short-retrieval, zeroshot, box-cls, or ``all`` (then
``--data`` is the YAML listing the benchmarks, see ``fgclip_core.eval.config``).
"""

from __future__ import annotations

from pathlib import Path

import click

from fgclip_core.config import ConfigError, apply_overrides, load_config
from fgclip_core.eval.config import SUITES, BenchmarkSpec, EvalSettings, load_suite_file
from fgclip_core.eval.datasets import BenchmarkFormatError
from fgclip_core.eval.protocol import DEFAULT_PROTOCOL, PROTOCOLS

FORMATS = ("auto", "fgovd", "sharegpt4v", "dci", "urban1k", "coco", "karpathy", "caption-list", "image-folder",
           "label-file", "coco-instances")


@click.command(name="eval")
@click.argument("suite", type=click.Choice([*SUITES, "all"]))
@click.option("--model", "model_dir", required=True, help="FG-CLIP checkpoint folder (or URL).")
@click.option("--data", required=True, help="Benchmark file/folder; for 'all', the YAML listing benchmarks.")
@click.option("--images", default=None, help="Images root (for 'all': default for entries without one).")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--baseline", "baseline_dir", default=None, help="Baseline checkpoint to compare against.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
              help="Public layout of --data (auto-detected from its shape).")
@click.option("--name", default=None, help="Benchmark name in the outputs.")
@click.option("--classnames", default=None, help="Class-names file (zeroshot).")
@click.option("--limit", type=int, default=None, help="First N items (ShareGPT4V defaults to 1000).")
@click.option("--split", default="test", show_default=True, help="Karpathy split.")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default=None,
              help=f"Evaluation preset (default {DEFAULT_PROTOCOL}; fgclip_core/eval/README.md). For 'all', "
                   "set 'protocol:' per entry in the YAML.")
@click.option("--settings", "settings_file", default=None, type=click.Path(dir_okay=False),
              help="YAML/JSON with evaluation settings (batch_size, chunk_size, templates, ...).")
@click.option("--set", "overrides", multiple=True, help="Setting override key=value (repeatable).")
@click.option("--cache-dir", default=None, help="Embedding cache folder (default OUTPUT/cache).")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI",
              help="Log to MLflow at this URI (also logs when an MLflow run is active).")
@click.option("--paper", "paper_release", default=None, metavar="RELEASE",
              help="Print this release's published figures next to ours (e.g. fg-clip-large) even when the "
                   "model's fingerprint is not listed for it (a converted copy, a fine-tune).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def eval_(suite: str, model_dir: str, data: str, images: str | None, output: str, baseline_dir: str | None,
          fmt: str, name: str | None, classnames: str | None, limit: int | None, split: str, protocol: str | None,
          settings_file: str | None, overrides: tuple[str, ...], cache_dir: str | None,
          tracking_uri: str | None, paper_release: str | None, no_progress: bool) -> None:
    """Evaluate a model on FG-CLIP's benchmark suite and write metrics.json, details.jsonl and a report."""
    from fgclip_core.eval.paper import format_metric
    from fgclip_core.eval.runner import evaluate
    from fgclip_core.model.checkpoint import CheckpointError

    try:
        if suite == "all":
            if settings_file:
                raise click.UsageError("for 'all', put settings in the YAML's 'settings' section")
            if protocol:
                raise click.UsageError("for 'all', give each entry 'protocol:' in the YAML")
            sf = load_suite_file(data)
            specs = [s if s.images or not images else s.model_copy(update={"images": images})
                     for s in sf.benchmarks]
            base_settings = sf.settings.model_dump()
        else:
            specs = [BenchmarkSpec.model_validate(dict(suite=suite, data=data, images=images, name=name, format=fmt,
                                                       classnames=classnames, limit=limit, split=split,
                                                       protocol=protocol or DEFAULT_PROTOCOL))]
            base_settings = (load_config(EvalSettings, settings_file).model_dump() if settings_file else {})
        values = apply_overrides(base_settings, list(overrides))
        if cache_dir:
            values["cache_dir"] = cache_dir
        if no_progress:
            values["progress"] = False
        if paper_release:
            values["paper_release"] = paper_release
        settings = load_config(EvalSettings, base=values)
        outcome = evaluate(specs, model_dir, output, settings=settings, baseline_dir=baseline_dir,
                           tracking_uri=tracking_uri)
    except (BenchmarkFormatError, ConfigError, CheckpointError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    for res, base in outcome.results:
        line = ", ".join(format_metric(res.benchmark, k, v, outcome.paper) for k, v in res.metrics.items())
        click.echo(f"{res.benchmark} ({res.suite}, n={res.n}): {line}")
        if base is not None:
            click.echo("  baseline: " + ", ".join(f"{k}={100 * v:.2f}" for k, v in base.metrics.items()))
        if res.missing_images:
            click.echo(f"  missing images: {len(res.missing_images)} (see {Path(output)}/metrics.json)")
    if outcome.paper is not None:
        paper = outcome.paper
        click.echo(f"paper figures: {paper['model']} ({paper['source']}), protocol {paper['protocol']}, "
                   f"release chosen by {paper['matched_by']}; {len(paper['metrics'])} compared")
        if paper["transcribed_from"]:
            click.echo(f"  figures read from: {paper['transcribed_from']}")
    click.echo(f"metrics: {outcome.metrics_path}")
    click.echo(f"report: {outcome.report.html}")
