"""Jobs, the schedule and the champion re-evaluation of the model side.

* ``retrain``: trained_model -> evaluation -> registered_model (gated promotion), on the shards of every
  materialised image batch; ``retrain_schedule`` launches it on ``FGCLIP_RETRAIN_CRON`` (default daily
  03:00 UTC) and skips while no shards exist. Declarative automation on ``trained_model`` does the same
  only when new shards landed (``orchestration.automation``).
* ``evaluate_champion``: the current champion on the current benchmark set; its metrics are recorded
  on the champion's version (so the next challenger is compared on the same benchmarks) and observed
  on ``registered_model``.
* ``fgclip_pipeline``: every asset.
"""

from dagster import (
    AssetKey,
    AssetObservation,
    AssetSelection,
    DefaultScheduleStatus,
    MetadataValue,
    OpExecutionContext,
    ResourceParam,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    job,
    op,
    schedule,
)

from assets.evaluation import EvaluationConfig, RegistryResource, champion_on_benchmarks, local_benchmarks
from assets.model_metadata import mlflow_links
from orchestration import settings
from orchestration.model_resources import MLflowResource
from orchestration.refs import EvalRef, RefIOManager
from orchestration.versions import OutputStoreResource

RETRAIN_ASSETS = ["trained_model", "evaluation", "registered_model"]

retrain_job = define_asset_job(
    "retrain", selection=AssetSelection.assets(*RETRAIN_ASSETS),
    description="Train on the shards of every materialised image batch, evaluate against the base checkpoint and "
                "the champion, register (alias challenger) and promote when every gate passes.")

fgclip_pipeline_job = define_asset_job(
    "fgclip_pipeline", selection="*",
    description="Every asset: the image batches' lineage stages, training, evaluation, registration/promotion.")


@schedule(job=retrain_job, cron_schedule=settings.retrain_cron(), name="retrain_schedule",
          default_status=DefaultScheduleStatus.STOPPED,
          description="Launches `retrain` on FGCLIP_RETRAIN_CRON (turn it on in the UI); skips while no "
                      "training_shards partition is materialised.")
def retrain_schedule(context: ScheduleEvaluationContext):
    done = context.instance.get_materialized_partitions(AssetKey("training_shards"))
    if not done:
        return SkipReason("no training_shards partition materialised yet: nothing to train on")
    tick = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M") if context.scheduled_execution_time else "now"
    return RunRequest(run_key=f"retrain-{tick}", tags={"fgclip.trigger": "schedule",
                                                       "fgclip.partitions": ",".join(sorted(done))})


@op(description="Evaluate the current champion on the current eval_benchmarks and record its metrics on it.")
def evaluate_current_champion(context: OpExecutionContext, config: EvaluationConfig, ref_io_manager: ResourceParam[RefIOManager],
                              mlflow: MLflowResource, registry: RegistryResource,
                              output_store: OutputStoreResource) -> None:
    benchmarks = ref_io_manager.load(AssetKey("eval_benchmarks"))
    if not isinstance(benchmarks, EvalRef):
        raise TypeError(f"eval_benchmarks: expected an eval reference, got {benchmarks.kind}")
    benchmarks = local_benchmarks(benchmarks, output_store)
    with output_store.version("champion_evaluation", context.run_id, context.retry_number) as out:
        champ, metrics, run_id = champion_on_benchmarks(context, benchmarks, out.local, config, mlflow, registry,
                                                        force=True)
        if champ is not None:
            output_store.publish(out, "metrics")
    if champ is None:
        context.log.warning("%s has no champion yet: nothing to evaluate", registry.model_name)
        return
    output_store.prune("champion_evaluation", {out.url})
    rows = "\n".join(f"| {k} | {100 * v:.2f} |" for k, v in sorted((metrics or {}).items()))
    uri = mlflow.uri()
    context.log_event(AssetObservation(asset_key="registered_model", metadata={
        "champion_version": champ, "benchmarks_sha256": benchmarks.sha256, "eval_run_id": run_id or "",
        "champion_metrics": MetadataValue.md("| metric | champion |\n|---|---:|\n" + rows),
        **mlflow_links(uri, experiment_id=mlflow.experiment_id(registry.eval_experiment), run_id=run_id,
                       model=(registry.model_name, champ))}))


@job(name="evaluate_champion", description="Re-evaluate the current champion on the current benchmark set.")
def evaluate_champion_job():
    evaluate_current_champion()


MODEL_JOBS = [retrain_job, evaluate_champion_job]
MODEL_SCHEDULES = [retrain_schedule]
