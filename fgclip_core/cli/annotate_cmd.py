"""`fgclip annotate`: turn raw images into FineHARD-style records, or make hard negatives alone.

    fgclip annotate --images ROOT --out URL [--config FILE] [--set key=value ...]
    fgclip annotate negatives --expressions FILE.txt --out FILE.jsonl [--backend rules|llm] [-n 10]
                              [--difficulty hard|medium|easy|trivial|MIX] [--captions FILE] [--report]
"""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from fgclip_core.config import ConfigError

console = Console(stderr=True)


def _config(path: str | None, overrides: tuple[str, ...]):
    from fgclip_core.annotate.config import load_annotate_config

    try:
        return load_annotate_config(path, overrides)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e


@click.group(name="annotate", invoke_without_command=True)
@click.option("--images", "images_root", help="Folder or URL of the images to annotate (recursive).")
@click.option("--out", "out", help="Output folder or URL (records/, quarantine/, _done/, summary.json).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML/JSON AnnotateConfig.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override, e.g. boxes.backend=none.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def annotate(ctx: click.Context, images_root: str | None, out: str | None, config_path: str | None,
             overrides: tuple[str, ...], no_progress: bool) -> None:
    """Annotate images: long captions, region boxes + expressions, hard negatives."""
    if ctx.invoked_subcommand is not None:
        if images_root or out:
            raise click.UsageError("--images/--out belong to the pipeline, not to a subcommand")
        return
    if not images_root or not out:
        raise click.UsageError("fgclip annotate needs --images ROOT and --out URL (or a subcommand)")
    from fgclip_core.annotate.pipeline import Annotator

    cfg = _config(config_path, overrides)
    summary = Annotator(cfg, images_root, out).run(progress=not no_progress)
    table = Table(title=f"fgclip annotate -> {out}")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [("images in", summary.images), ("records out", summary.records), ("quarantined", summary.quarantined),
            ("chunks (skipped as done)", f"{summary.chunks} ({summary.chunks_skipped})"),
            ("regions", summary.regions), ("regions with 10 negatives", summary.regions_with_negatives)]
    if cfg.boxes.backend == "metadata":
        rows.append(("records without region metadata", summary.records_without_region_metadata))
    rows += [(f"  quarantined at {stage}", n) for stage, n in sorted(summary.quarantined_by_stage.items())]
    for what, n in rows:
        table.add_row(what, str(n))
    console.print(table)


MAX_RECORD_LINES = 64  # a longer block is no record: trivial then draws from the 32 lines either side


def _read_blocks(path: str) -> list[list[str]]:
    """Blocks of expressions (one per non-empty line): a block is a run of lines between blank lines, the
    expressions of one record (what ``trivial`` draws from)."""
    from fgclip_core.storage import filesystem

    fs, p = filesystem(path)
    blocks: list[list[str]] = [[]]
    with fs.open(p, "rt") as f:
        for line in f:
            if line.strip():
                blocks[-1].append(line.strip())
            elif blocks[-1]:
                blocks.append([])
    return [b for b in blocks if b]


def _contexts(blocks: list[list[str]]) -> list[tuple[str, ...]]:
    half = MAX_RECORD_LINES // 2
    out: list[tuple[str, ...]] = []
    for b in blocks:
        for i, e in enumerate(b):
            near = b if len(b) <= MAX_RECORD_LINES else b[max(0, i - half): i + half + 1]
            out.append(tuple(o for o in near if o != e))
    return out


@annotate.command(name="negatives")
@click.option("--expressions", "expressions_path", required=True,
              help="Text file (or URL): one expression per line; blank lines separate records (for trivial).")
@click.option("--out", "out", default=None,
              help='JSONL out: {"expression", "negatives", "levels", "note"} per expression (needed unless --report).')
@click.option("--backend", type=click.Choice(["rules", "llm"]), default=None, help="Default: the config's (rules).")
@click.option("-n", "n", type=click.IntRange(1, 50), default=None, help="Negatives per expression (default 10).")
@click.option("--difficulty", default=None, metavar="LEVELS",
              help="hard (1 attribute changed, default), medium (2), easy (3), trivial (another object of the "
                   "record), or a mix: hard,medium / hard:3,trivial:1.")
@click.option("--captions", "captions_path", default=None,
              help="Text file (or URL) of captions to learn replacement plausibility from (default: the expressions).")
@click.option("--report", is_flag=True, help="Print the distribution: changes per negative, attribute families, "
              "top replacements, failed checks, expressions with fewer than n and why.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="AnnotateConfig (its endpoint/negatives sections are used).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def negatives(expressions_path: str, out: str | None, backend: str | None, n: int | None, difficulty: str | None,
              captions_path: str | None, report: bool, config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Hard negatives for referring expressions (one JSON line out per non-empty input line)."""
    from fgclip_core.annotate.factory import build_negatives
    from fgclip_core.storage import filesystem

    if out is None and not report:
        raise click.UsageError("fgclip annotate negatives needs --out FILE.jsonl (or --report)")
    extra = [*overrides, *([f"negatives.backend={backend}"] if backend else []), *([f"negatives.n={n}"] if n else []),
             *([f"negatives.difficulty={difficulty}"] if difficulty else [])]
    cfg = _config(config_path, tuple(extra))
    blocks = _read_blocks(expressions_path)
    expressions = [e for b in blocks for e in b]
    gen = build_negatives(cfg)
    contexts = _contexts(blocks) if getattr(gen, "uses_context", False) else None
    if cfg.negatives.plausibility == "captions" and hasattr(gen, "learn"):
        if captions_path:
            cfs, cpath = filesystem(captions_path)
            with cfs.open(cpath, "rt") as f:
                gen.learn([ln.strip() for ln in f if ln.strip()], source=captions_path)
        else:
            gen.learn(expressions, source="expressions")
    results = gen.generate(expressions, contexts)
    failed = [r for r in results if r.error]
    if out is not None:
        ofs, opath = filesystem(out)
        parent = opath.rsplit("/", 1)[0] if "/" in opath else ""
        if parent:
            ofs.makedirs(parent, exist_ok=True)
        with ofs.open(opath, "wt") as f:
            for r in results:
                f.write(json.dumps({"expression": r.expression, "negatives": r.negatives, "levels": r.levels,
                                    "note": r.note}, ensure_ascii=False) + "\n")
        if failed:
            with ofs.open(opath + ".quarantine.jsonl", "wt") as f:
                for r in failed:
                    f.write(json.dumps({"expression": r.expression, "stage": "negatives", "reason": r.error}) + "\n")
    if report:
        from fgclip_core.annotate.negative_report import build_report, print_report

        print_report(build_report(results, cfg.negatives.n), Console())
    full = sum(1 for r in results if len(r.negatives) == cfg.negatives.n)
    console.print(f"{len(results)} expressions ({cfg.negatives.difficulty}): {full} with {cfg.negatives.n} negatives, "
                  f"{len(results) - full - len(failed)} with fewer, {len(failed)} failed"
                  + (f" (reasons in {out}.quarantine.jsonl)" if failed and out else ""))
    if failed:
        sys.exit(1)


@annotate.command(name="build-tiny")
@click.option("--kind", type=click.Choice(["owlv2", "grounding-dino", "llava"]), required=True)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Directory to save it in.")
@click.option("--seed", type=int, default=0)
def build_tiny(kind: str, out: str, seed: int) -> None:
    """Save a tiny randomly initialised detector (owlv2, grounding-dino) or captioner (llava): offline
    plumbing checks and the demo, never real annotations."""
    import torch

    from fgclip_core.annotate.backends import tiny

    torch.set_num_threads(1)
    build = {"owlv2": tiny.build_tiny_owlv2, "grounding-dino": tiny.build_tiny_grounding_dino,
             "llava": tiny.build_tiny_llava}[kind]
    path = build(out, seed=seed)
    console.print(f"tiny random {kind} saved to {path} (use it as boxes.model_dir / captions.model_dir)")
