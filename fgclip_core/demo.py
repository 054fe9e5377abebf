"""`make demo`: the whole FG-CLIP pipeline on the bundled sample, on a CPU, offline, in a few minutes.

raw images (+ the alt text and labelled boxes that came with them)
  -> annotate (captions, phrases + boxes, rule-based hard negatives)
  -> validate (kept / quarantined)
  -> WebDataset shards + manifest
  -> DeepSpeed training (tiny stage-2 recipe, 2 processes, ZeRO-2, gloo)
  -> evaluation against the starting checkpoint (FG-OVD, retrieval, classification) + HTML report
  -> MLflow registry: version aliased `challenger`, promoted to `champion` when it beats the champion.

Each step is the `fgclip` command a user would type (run as ``python -m fgclip_core``), so the demo
doubles as an end-to-end check of the command-line contracts. Everything lands under ``--work``
(default ``.fgclip/demo``); MLflow uses a SQLite store there unless ``MLFLOW_TRACKING_URI`` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fgclip_core.redact import redact_uri
from fgclip_core.sample import materialize_sample, write_image_metadata


def _step(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def fgclip(*args: str | Path, cwd: Path | None = None) -> str:
    """Run ``fgclip ARGS`` and return its stdout; its stderr streams through; a failure stops the demo."""
    cmd = [sys.executable, "-m", "fgclip_core", *map(str, args)]
    print("$ fgclip " + " ".join(map(str, args)), flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False, cwd=cwd)
    if done.stdout:
        print(done.stdout, end="" if done.stdout.endswith("\n") else "\n", flush=True)
    if done.returncode != 0:
        raise SystemExit(f"demo: `fgclip {args[0]}` failed with exit code {done.returncode}")
    return done.stdout


def run(work: Path, steps: int, nproc: int) -> dict[str, object]:
    work = work.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(work / 'mlflow.db').resolve()}")
    t_all = time.perf_counter()

    t = _step("1/7 raw images: real photos shipped by installed packages")
    sample = materialize_sample(work / "sample")
    metadata = write_image_metadata(sample, work / "sample" / "metadata.jsonl")
    print(f"{len(sample.records)} images in {sample.images_root} ({time.perf_counter() - t:.1f} s)")

    t = _step("2/7 annotate: captions from alt text, boxes from labels, rule-based hard negatives")
    annotated = work / "annotated"
    fgclip("annotate", "--images", sample.images_root, "--out", annotated, "--no-progress",
           "--set", f"captions.metadata_file={metadata}", "--set", "boxes.backend=metadata",
           "--set", f"boxes.metadata_file={metadata}")
    print(f"({time.perf_counter() - t:.1f} s)")

    t = _step("3/7 validate the annotations (bad records are quarantined with a reason, never lost)")
    fgclip("data", "validate", "--annotations", annotated / "records", "--images", sample.images_root,
           "--out", work / "validated")
    print(f"({time.perf_counter() - t:.1f} s)")

    t = _step("4/7 training shards (WebDataset tar + manifest, atomic)")
    shards = work / "shards"
    fgclip("data", "build-shards", "--annotations", annotated / "records", "--images", sample.images_root,
           "--out", shards, "--samples-per-shard", "4", "--tokenizer", "clip")
    print(f"({time.perf_counter() - t:.1f} s)")

    t = _step(f"5/7 train: tiny stage-2 recipe, {nproc} process(es), DeepSpeed ZeRO-2 on CPU")
    start = work / "start"
    fgclip("model", "init", "--arch", "tiny", "--output", start, "--seed", "0")
    run_dir = work / "run"
    fgclip("train", "--recipe", "tiny-cpu-stage2", "--data", shards, "--output", run_dir, "--init", start,
           "--max-steps", str(steps), "--save-every", str(max(1, steps // 2)), "--nproc", str(nproc),
           "--no-progress")
    print(f"({time.perf_counter() - t:.1f} s)")

    t = _step("6/7 evaluate the trained model against its starting checkpoint")
    from fgclip_core.eval.sample_benchmarks import write_sample_suite

    suite_yaml = write_sample_suite(sample, work / "benchmarks")
    eval_dir = work / "eval"
    fgclip("eval", "all", "--model", run_dir / "export", "--baseline", start, "--data", suite_yaml,
           "--output", eval_dir, "--no-progress", "--set", "templates=simple", "--set", "box_templates=simple",
           "--tracking-uri", os.environ["MLFLOW_TRACKING_URI"])
    print(f"({time.perf_counter() - t:.1f} s)")

    t = _step("7/7 MLflow registry: register as challenger, promote to champion if it beats the champion")
    reg = json.loads(fgclip("registry", "register", "--model", run_dir / "export", "--name", "fgclip-demo",
                            "--metrics", eval_dir / "metrics.json", cwd=work).strip().splitlines()[-1])
    decision = json.loads(fgclip("registry", "promote", "--name", "fgclip-demo", "--version", reg["version"],
                                 "--metric", "fgovd-sample/accuracy", cwd=work).strip().splitlines()[-1])
    print(f"({time.perf_counter() - t:.1f} s)")

    report = eval_dir / "report.html"
    summary = {"work": str(work), "report": str(report), "registered": reg, "promotion": decision,
               "seconds": round(time.perf_counter() - t_all, 1)}
    print("\n=== done in {seconds} s\nreport: {report}\nMLflow: {uri}".format(
        uri=redact_uri(os.environ["MLFLOW_TRACKING_URI"]), **summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("FGCLIP_HOME", ".fgclip")) / "demo")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps of the tiny training run")
    ap.add_argument("--nproc", type=int, default=2, help="local training processes (gloo on CPU)")
    args = ap.parse_args(argv)
    run(args.work, args.steps, args.nproc)


if __name__ == "__main__":
    main()
