"""The starting checkpoint and the trained model (unpartitioned, downstream of every image batch).

``trained_model`` trains on the shards of every materialised ``training_shards`` partition (or the
ones named in its config), each handed over as a :class:`ShardSetRef`. Training runs in its own
processes (``fgclip train``: DeepSpeed, torchrun-style workers) through Dagster Pipes: output streams
into the run's logs, a cancelled run sends SIGINT, rank 0 reports step logs and its summary. Each
materialisation writes under its own folder ``<data>/trained_model/<run id>/`` (a retry gets another),
so concurrent trainings never share a writable folder; at most N run at once (pool ``training``).

With an ``s3://`` data URL the trainer writes into a local scratch folder and the published outputs
(``run/export``, ``run/summary.json``, ``run/tracking``; not the intermediate DeepSpeed checkpoints,
which only a resume inside that run would read) are copied to ``<data>/trained_model/<run id>/``
with the completion marker last (``orchestration.versions``); the reference then holds the
``s3://`` URL of the export.
"""

import json

from dagster import (
    AllPartitionMapping,
    AssetExecutionContext,
    AssetIn,
    Backoff,
    Config,
    MetadataValue,
    Output,
    PipesSubprocessClient,
    RetryPolicy,
    asset,
)
from pydantic import Field

from assets.model_metadata import (
    code_version,
    loss_curve_markdown,
    manifests_json,
    mlflow_links,
    read_loss_curve,
)
from orchestration.automation import retrain_condition
from orchestration.model_resources import MLflowResource, TrainingResource
from orchestration.refs import ModelRef, ShardSetRef
from orchestration.versions import OutputStoreResource

# Transient failures (a worker killed, a store briefly unreachable) are retried in a fresh folder.
TRAIN_RETRY = RetryPolicy(max_retries=2, delay=5, backoff=Backoff.EXPONENTIAL)


def _model_ref(path: str, uri: str | None = None, **kw) -> ModelRef:
    """A reference to the model folder ``uri`` (default ``path``), hashed from ``path`` (its local copy)."""
    from fgclip_core.eval.cache import fingerprint_dir

    return ModelRef(uri=uri or path, sha256=fingerprint_dir(path), **kw)


@asset(group_name="training", kinds={"pytorch"}, io_manager_key="ref_io_manager",
       description="The checkpoint training starts from (and evaluation compares against): a random init "
                   "of the configured architecture in its own folder, or the checkpoint given as init_from.")
def base_checkpoint(context: AssetExecutionContext, training: TrainingResource,
                    output_store: OutputStoreResource) -> Output[ModelRef]:
    if training.init_from:
        ref = _model_ref(training.init_from)
        return Output(ref, metadata={"path": MetadataValue.path(ref.uri), "source": "init_from",
                                     "sha256": ref.sha256})
    from fgclip_core.model.build import init_checkpoint

    with output_store.version("base_checkpoint", context.run_id, context.retry_number) as out:
        ckpt = init_checkpoint(training.init_arch, out.local / "checkpoint", seed=training.init_seed)
        output_store.publish(out, "checkpoint")
        ref = _model_ref(str(ckpt), out.url_of(ckpt))
    output_store.prune("base_checkpoint", {out.url})
    context.log.info("wrote a random %s checkpoint (seed %d) to %s", training.init_arch, training.init_seed, ref.uri)
    return Output(ref, metadata={"path": MetadataValue.path(ref.uri), "arch": training.init_arch,
                                 "seed": training.init_seed, "source": "random init", "sha256": ref.sha256})


class TrainModelConfig(Config):
    partitions: list[str] | None = Field(
        default=None, description="image batches to train on; default: every materialised training_shards partition")


def select_shards(shards: dict[str, ShardSetRef] | ShardSetRef, wanted: list[str] | None) -> dict[str, ShardSetRef]:
    """The shard sets to train on, in partition order; a named partition without shards is an error."""
    if isinstance(shards, ShardSetRef):  # a single stored partition can come back as one reference
        shards = {shards.partition or "default": shards}
    if wanted is not None:
        missing = sorted(set(wanted) - set(shards))
        if missing:
            raise ValueError(f"trained_model: no materialised training_shards for partition(s) {missing} "
                             f"(materialised: {sorted(shards)})")
        shards = {k: shards[k] for k in wanted}
    chosen = {k: shards[k] for k in sorted(shards) if shards[k].samples > 0}
    if not chosen:
        raise ValueError("trained_model: no training_shards partition with samples is materialised yet")
    return chosen


@asset(group_name="training", kinds={"pytorch", "deepspeed"}, io_manager_key="ref_io_manager", pool="training",
       ins={"training_shards": AssetIn(partition_mapping=AllPartitionMapping()), "base_checkpoint": AssetIn()},
       retry_policy=TRAIN_RETRY, automation_condition=retrain_condition(),
       description="`fgclip train` from the starting checkpoint on the shards of every materialised image batch "
                   "(or the configured ones), in its own processes and its own versioned folder.")
def trained_model(context: AssetExecutionContext, config: TrainModelConfig,
                  training_shards: dict[str, ShardSetRef], base_checkpoint: ModelRef,
                  training: TrainingResource, mlflow: MLflowResource, output_store: OutputStoreResource,
                  pipes_subprocess_client: PipesSubprocessClient) -> Output[ModelRef]:
    shards = select_shards(training_shards, config.partitions)
    trained_on = {k: ref.sha256 for k, ref in shards.items()}
    for part, ref in shards.items():
        output_store.require_complete(ref.uri, f"training_shards[{part}]")
    output_store.require_complete(base_checkpoint.uri, "base_checkpoint")
    uri = mlflow.uri()
    # the experiment is made here when missing, so the runs' artifacts land in the store's artifact root
    exp_id = mlflow.experiment_id(training.experiment)
    with output_store.version("trained_model", context.run_id, context.retry_number) as out:
        run_dir = out.local / "run"
        cmd = training.command([r.uri for r in shards.values()], str(run_dir), base_checkpoint.uri,
                               run_name=f"dagster-{context.run_id[:8]}")
        context.log.info("training on %d batch(es) %s: $ %s", len(shards), list(shards), " ".join(cmd))
        invocation = pipes_subprocess_client.run(command=cmd, context=context, env=training.env(uri))
        reported = invocation.get_materialize_result()

        summary = json.loads((run_dir / "summary.json").read_text())
        export = summary.get("export_dir") or str(run_dir / "export")
        run_id = summary.get("run_id") or None
        lineage = {"dagster.run_id": context.run_id, "fgclip.partitions": json.dumps(list(shards)),
                   "fgclip.shard_manifests": manifests_json(trained_on),
                   "fgclip.base_checkpoint_sha256": base_checkpoint.sha256, "fgclip.code_version": code_version()}
        if run_id:
            from mlflow import MlflowClient

            client = MlflowClient(uri)
            for k, v in lineage.items():
                client.set_tag(run_id, k, v)
        published = [p for p in ("run/export", "run/summary.json", "run/tracking") if (out.local / p).exists()]
        output_store.publish(out, *published)
        ref = _model_ref(export, out.url_of(export), mlflow_run_id=run_id, trained_on=trained_on,
                         dagster_run_id=context.run_id, base_checkpoint_sha256=base_checkpoint.sha256,
                         counts={"steps": int(summary["steps"]), "samples": int(summary["samples"])})
        points = read_loss_curve(run_dir / "tracking" / "metrics.jsonl")
    output_store.prune("trained_model", {out.url})
    metadata = {
        **(reported.metadata or {}),
        "loss_curve": MetadataValue.md(loss_curve_markdown(points)),
        "steps": summary["steps"],
        "samples": summary["samples"],
        "final_loss": summary["final_loss"],
        "skipped_nonfinite": summary["skipped_nonfinite"],
        "seconds": summary["seconds"],
        "samples_per_s": summary["samples_per_s"],
        "recipe": training.recipe,
        "nproc": training.nproc,
        "cpu_allocator": summary.get("cpu_allocator", "unknown"),
        "partitions": MetadataValue.json(list(shards)),
        "shard_manifests": manifests_json(trained_on),
        "samples_in_shards": sum(r.samples for r in shards.values()),
        "base_checkpoint_sha256": base_checkpoint.sha256,
        "model_sha256": ref.sha256,
        "code_version": lineage["fgclip.code_version"],
        "export_dir": MetadataValue.path(ref.uri),
        "mlflow_run_id": run_id or "",
        **mlflow_links(uri, experiment_id=exp_id, run_id=run_id),
    }
    if summary.get("tracking_failures"):
        metadata["tracking_failures"] = summary["tracking_failures"]
    return Output(ref, metadata=metadata)
