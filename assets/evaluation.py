"""Evaluation: the benchmark set, and the trained model against its starting checkpoint and the champion.

``eval_benchmarks`` writes the sample benchmark suite into its own folder and names it by content
(``fgclip_core.eval.suite_hash``): models are compared only on equal benchmark hashes. ``evaluation``
evaluates the trained model (and the base checkpoint as the baseline) into its own folder, and the
current champion on the same benchmarks when the champion has no metrics for them yet; each
evaluation is an MLflow run in the ``fgclip-eval`` experiment with the lineage as tags.

With an ``s3://`` data URL both write into a local scratch folder and publish to
``<data>/<asset>/<run id>/`` (completion marker last, ``orchestration.versions``): the benchmark set
(``sample/`` + ``suite/``, its YAML naming the images relative to itself) and the evaluation's
``model/`` (metrics, report) and ``champion/metrics/``. The evaluation reads the models from their
references' URLs (``fgclip_core.model`` fetches an ``s3://`` checkpoint into its cache) and the
benchmark set through :func:`local_benchmarks`.
"""

import json
import math
import os
from pathlib import Path

from dagster import AssetExecutionContext, Config, ConfigurableResource, MetadataValue, Output, asset
from pydantic import Field

from assets.model_metadata import code_version, manifests_json, mlflow_links, png_markdown
from orchestration.automation import follows
from orchestration.model_resources import MLflowResource
from orchestration.refs import EvalRef, ModelRef
from orchestration.versions import OutputStoreResource


class RegistryResource(ConfigurableResource):
    """The registered model and the experiment evaluations go to."""

    model_name: str = Field(default="fgclip", description="registered model name")
    eval_experiment: str = Field(default="fgclip-eval", description="MLflow experiment of evaluation runs")


@asset(group_name="evaluation", kinds={"python"}, io_manager_key="ref_io_manager",
       description="One small benchmark per suite (FG-OVD, long/short retrieval, zero-shot, box classification) "
                   "built from the bundled sample photos, in its own folder, named by its content hash.")
def eval_benchmarks(context: AssetExecutionContext, output_store: OutputStoreResource) -> Output[EvalRef]:
    from fgclip_core.eval import load_suite_file, write_sample_suite
    from fgclip_core.eval.suite_hash import suite_sha256
    from fgclip_core.sample import materialize_sample

    with output_store.version("eval_benchmarks", context.run_id, context.retry_number) as out:
        sample = materialize_sample(out.local / "sample")
        suite_file = write_sample_suite(sample, out.local / "suite")
        if out.remote:  # published elsewhere: the YAML names its images relative to itself
            _relative_images(suite_file)
        specs = load_suite_file(suite_file).benchmarks
        sha = suite_sha256(specs)
        output_store.publish(out, "sample", "suite")
        ref = EvalRef(uri=out.url_of(out.local / "suite"), sha256=sha, benchmarks_sha256=sha,
                      counts={"benchmarks": len(specs), "images": len(sample.records)})
        suite_url = out.url_of(suite_file)
    output_store.prune("eval_benchmarks", {out.url})
    return Output(ref, metadata={"suite": MetadataValue.path(suite_url), "benchmarks": len(specs),
                                 "images": len(sample.records), "benchmarks_sha256": sha})


def _relative_images(suite_file: Path) -> None:
    """Rewrite the absolute image folders of a suite YAML as paths relative to its folder."""
    import yaml

    from fgclip_core.safe_yaml import read_yaml

    data = read_yaml(suite_file)
    for b in data["benchmarks"]:
        if b.get("images") and os.path.isabs(b["images"]):
            b["images"] = os.path.relpath(b["images"], suite_file.parent)
    suite_file.write_text(yaml.safe_dump(data, sort_keys=False))


def local_benchmarks(benchmarks: EvalRef, output_store: OutputStoreResource) -> EvalRef:
    """``benchmarks`` with a local ``uri``: as it is for a local folder; for an ``s3://`` one, its version
    folder (suite + sample images) fetched into the local checkpoint/data cache (kept between runs)."""
    from fgclip_core import storage

    if not storage.is_remote(benchmarks.uri):
        return benchmarks
    from fgclip_core.model.checkpoint import resolve_local

    output_store.require_complete(benchmarks.uri, "eval_benchmarks")
    version_url, suite_name = benchmarks.uri.rstrip("/").rsplit("/", 1)
    return benchmarks.model_copy(update={"uri": str(resolve_local(version_url) / suite_name)})


class EvaluationConfig(Config):
    templates: str = Field(default="simple", description="zero-shot prompt set: clip80, simple, none")
    box_templates: str = Field(default="simple", description="box-classification prompt set")
    batch_size: int = Field(default=32, ge=1)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _delta(v: float, b: float | None) -> str:
    return "-" if b is None else f"{100 * (v - b):+.2f}"


def metrics_markdown(results, champion: dict[str, float] | None = None) -> str:
    """One row per benchmark metric: model, baseline, champion and the differences (percent points)."""
    lines = ["| benchmark | metric | model | baseline | delta | champion | delta vs champion |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for res, base in results:
        for k, v in res.metrics.items():
            b = base.metrics.get(k) if base is not None else None
            c = (champion or {}).get(f"{res.benchmark}/{k}")
            lines.append(f"| {res.benchmark} | {k} | {_fmt(v)} | {_fmt(b)} | {_delta(v, b)} | {_fmt(c)} | "
                         f"{_delta(v, c)} |")
    return "\n".join(lines)


def flat_metrics(results, baseline: bool = False) -> dict[str, float]:
    pairs = [(b if baseline else r) for r, b in results]
    return {f"{r.benchmark}/{k}": float(v) for r in pairs if r is not None for k, v in r.metrics.items()}


def run_evaluation(model_dir: str, benchmarks: EvalRef, out: Path, config: EvaluationConfig, mlflow: MLflowResource,
                   experiment: str, tags: dict[str, str], run_name: str, baseline_dir: str | None = None):
    """``fgclip_core.eval.evaluate`` on the benchmark set of ``benchmarks`` into ``out``, as an MLflow run
    of ``experiment`` with ``tags``; returns the outcome and the experiment id."""
    from fgclip_core.eval import EvalSettings, evaluate, load_suite_file

    suite = load_suite_file(Path(benchmarks.uri) / "benchmarks.yaml")
    settings = EvalSettings(templates=config.templates, box_templates=config.box_templates,
                            batch_size=config.batch_size, progress=False)
    exp_id = mlflow.experiment_id(experiment)   # made here so its artifacts land in the store's root
    outcome = evaluate(suite.benchmarks, model_dir, out, settings=settings, baseline_dir=baseline_dir,
                       tracking_uri=mlflow.uri(), experiment=experiment, run_name=run_name,
                       tags={**tags, "fgclip.benchmarks_sha256": benchmarks.sha256})
    return outcome, exp_id


def champion_on_benchmarks(context, benchmarks: EvalRef, out: Path, config: EvaluationConfig,
                           mlflow: MLflowResource, registry: RegistryResource,
                           force: bool = False) -> tuple[str | None, dict[str, float] | None, str | None]:
    """The current champion's metrics on this benchmark set: recorded ones, else (or with ``force``) a fresh
    evaluation of the champion's registered checkpoint, recorded on its version. (version, metrics, run id)"""
    from fgclip_core.registry import (
        champion_version,
        download_checkpoint,
        metrics_on_benchmarks,
        record_benchmark_metrics,
    )

    uri = mlflow.uri()
    champ = champion_version(registry.model_name, uri)
    if champ is None:
        return None, None, None
    if not force:
        known = metrics_on_benchmarks(registry.model_name, champ, benchmarks.sha256, uri)
        if known is not None:
            return champ, known, None
    context.log.info("evaluating champion %s v%s on benchmarks %s", registry.model_name, champ, benchmarks.sha256[:12])
    ckpt = download_checkpoint(registry.model_name, champ, out / "download", tracking_uri=uri)
    tags = {"dagster.run_id": context.run_id, "fgclip.role": "champion", "fgclip.model_name": registry.model_name,
            "fgclip.model_version": champ, "fgclip.code_version": code_version()}
    outcome, _ = run_evaluation(str(ckpt), benchmarks, out / "metrics", config, mlflow, registry.eval_experiment,
                                tags, run_name=f"champion-v{champ}-{context.run_id[:8]}")
    metrics = flat_metrics(outcome.results)
    record_benchmark_metrics(registry.model_name, champ, benchmarks.sha256, metrics, tracking_uri=uri)
    return champ, metrics, outcome.mlflow_run_id


@asset(group_name="evaluation", kinds={"pytorch"}, io_manager_key="ref_io_manager",
       automation_condition=follows("trained_model"),
       description="Metrics of the trained model, its starting checkpoint and the champion on the same benchmark "
                   "set, an HTML report, and an MLflow run in fgclip-eval with the lineage as tags.")
def evaluation(context: AssetExecutionContext, config: EvaluationConfig, trained_model: ModelRef,
               base_checkpoint: ModelRef, eval_benchmarks: EvalRef, mlflow: MLflowResource,
               registry: RegistryResource, output_store: OutputStoreResource) -> Output[EvalRef]:
    for ref, what in ((trained_model, "trained_model"), (base_checkpoint, "base_checkpoint")):
        output_store.require_complete(ref.uri, what)
    benchmarks = local_benchmarks(eval_benchmarks, output_store)
    with output_store.version("evaluation", context.run_id, context.retry_number) as out:
        ref, metadata = _evaluate_into(context, out, config, trained_model, base_checkpoint, benchmarks, mlflow,
                                       registry, output_store)
    output_store.prune("evaluation", {out.url})
    return Output(ref, metadata=metadata)


def _evaluate_into(context, out, config, trained_model: ModelRef, base_checkpoint: ModelRef, eval_benchmarks: EvalRef,
                   mlflow: MLflowResource, registry: RegistryResource, output_store: OutputStoreResource):
    """The body of ``evaluation`` in its version ``out``: (reference, metadata)."""
    tags = {"dagster.run_id": context.run_id, "fgclip.role": "challenger",
            "fgclip.partitions": json.dumps(sorted(trained_model.trained_on)),
            "fgclip.shard_manifests": manifests_json(trained_model.trained_on),
            "fgclip.base_checkpoint_sha256": base_checkpoint.sha256, "fgclip.model_sha256": trained_model.sha256,
            "fgclip.training_run_id": trained_model.mlflow_run_id or "", "fgclip.code_version": code_version()}
    outcome, exp_id = run_evaluation(trained_model.uri, eval_benchmarks, out.local / "model", config, mlflow,
                                     registry.eval_experiment, tags, run_name=f"eval-{context.run_id[:8]}",
                                     baseline_dir=base_checkpoint.uri)
    metrics, baseline = flat_metrics(outcome.results), flat_metrics(outcome.results, baseline=True)
    champ, champ_metrics, champ_run = champion_on_benchmarks(context, eval_benchmarks, out.local / "champion",
                                                             config, mlflow, registry)
    from fgclip_core.hashing import sha256_file

    output_store.publish(out, "model", *(["champion/metrics"] if champ_run else []))
    ref = EvalRef(uri=out.url_of(out.local / "model"), sha256=sha256_file(outcome.metrics_path), metrics=metrics,
                  mlflow_run_id=outcome.mlflow_run_id, benchmarks_sha256=eval_benchmarks.sha256,
                  model_sha256=trained_model.sha256, baseline_metrics=baseline, champion_version=champ,
                  champion_metrics=champ_metrics, counts={"benchmarks": len(outcome.results)})
    context.log.info("evaluated %d benchmarks: %s", len(outcome.results), ref.uri)
    uri = mlflow.uri()
    metadata = {
        "metrics": MetadataValue.md(metrics_markdown(outcome.results, champ_metrics)),
        "report_image": MetadataValue.md(png_markdown(Path(outcome.report.png).read_bytes(), "evaluation report")),
        "benchmarks": len(outcome.results),
        "benchmarks_sha256": eval_benchmarks.sha256,
        "non_finite_metrics": sum(not math.isfinite(v) for v in metrics.values()),
        "report": MetadataValue.path(out.url_of(outcome.report.html)),
        "metrics_file": MetadataValue.path(out.url_of(outcome.metrics_path)),
        "champion_version": champ or "",
        "shard_manifests": manifests_json(trained_model.trained_on),
        "mlflow_run_id": outcome.mlflow_run_id or "",
        **mlflow_links(uri, experiment_id=exp_id, run_id=outcome.mlflow_run_id),
    }
    if champ_run:
        metadata["champion_eval_run_id"] = champ_run
    return ref, metadata
