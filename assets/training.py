"""The starting checkpoint and the trained model.

Training runs in its own processes (``fgclip train``: DeepSpeed, torchrun-style workers), launched
through Dagster Pipes' subprocess client: its output streams into the run's logs, a cancelled run
sends it SIGINT, and rank 0 reports through Pipes (``fgclip_core.train.pipes``: step logs and the
summary as materialization metadata). The asset adds the numbers a person reads from the run's
``summary.json``, so they are there even when Pipes reporting failed (a warning in the trainer).
"""

import json
import shutil

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, PipesSubprocessClient, asset

from assets.data import training_shards
from orchestration.resources import (
    BASE_CHECKPOINT,
    SHARDS,
    TRAIN_RUN,
    MLflowResource,
    TrainingResource,
    WorkspaceResource,
)


@asset(group_name="training", kinds={"pytorch"},
       description="The checkpoint training starts from (and evaluation compares against): a random "
                   "init of the configured architecture, or the checkpoint given as init_from.")
def base_checkpoint(context: AssetExecutionContext, workspace: WorkspaceResource,
                    training: TrainingResource) -> MaterializeResult:
    if training.init_from:
        return MaterializeResult(metadata={"path": MetadataValue.path(training.init_from), "source": "init_from"})
    from fgclip_core.model.build import init_checkpoint

    out = init_checkpoint(training.init_arch, workspace.url(BASE_CHECKPOINT), seed=training.init_seed)
    context.log.info("wrote a random %s checkpoint (seed %d) to %s", training.init_arch, training.init_seed, out)
    return MaterializeResult(metadata={"path": MetadataValue.path(str(out)), "arch": training.init_arch,
                                       "seed": training.init_seed, "source": "random init"})


def base_checkpoint_url(workspace: WorkspaceResource, training: TrainingResource) -> str:
    return training.init_from or workspace.url(BASE_CHECKPOINT)


@asset(group_name="training", deps=[training_shards, base_checkpoint], kinds={"pytorch", "deepspeed"},
       description="`fgclip train` on the shards from the starting checkpoint, in its own processes; "
                   "the exported checkpoint is runs/train/export.")
def trained_model(context: AssetExecutionContext, workspace: WorkspaceResource, training: TrainingResource,
                  mlflow: MLflowResource, pipes_subprocess_client: PipesSubprocessClient) -> MaterializeResult:
    out = workspace.local_path(TRAIN_RUN)
    if out.exists():  # a fresh run each time: no resume from a previous materialization's checkpoints
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the experiment is made here when missing, so the runs' artifacts live in the workspace store and
    # not under this run folder (which the next materialization replaces)
    mlflow.experiment_id(training.experiment)
    cmd = training.command(workspace.url(SHARDS), str(out), base_checkpoint_url(workspace, training),
                           run_name=f"dagster-{context.run_id[:8]}")
    context.log.info("$ %s", " ".join(cmd))
    invocation = pipes_subprocess_client.run(command=cmd, context=context, env=training.env(mlflow.uri()))
    reported = invocation.get_materialize_result()

    summary = json.loads((out / "summary.json").read_text())
    export = summary.get("export_dir") or str(out / "export")
    metadata = {
        "steps": summary["steps"],
        "samples": summary["samples"],
        "final_loss": summary["final_loss"],
        "skipped_nonfinite": summary["skipped_nonfinite"],
        "seconds": summary["seconds"],
        "samples_per_s": summary["samples_per_s"],
        "recipe": training.recipe,
        "nproc": training.nproc,
        "cpu_allocator": summary.get("cpu_allocator", "unknown"),
        "export_dir": MetadataValue.path(export),
        "mlflow_run_id": summary.get("run_id") or "",
    }
    if summary.get("tracking_failures"):
        metadata["tracking_failures"] = summary["tracking_failures"]
    return MaterializeResult(metadata={**(reported.metadata or {}), **metadata})
