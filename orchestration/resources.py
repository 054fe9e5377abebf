"""Resources: where outputs live (workspace), where runs and models are tracked (MLflow), how training
is launched. Each holds settings only and turns them into paths, URIs, commands; the work stays in
``fgclip_core`` and heavy imports (mlflow, torch) happen inside methods, so loading the definitions
stays fast.

Workspace layout (every asset writes under one base; the names are the contract between assets and
checks, and a later per-shard partitioning adds a key below them)::

    <base_dir>/raw/sample/{images/,annotations.jsonl,metadata.jsonl}
    <base_dir>/annotated/{records/,quarantine/,_done/,summary.json}
    <base_dir>/validated/{kept.jsonl,quarantine.jsonl,summary.json}
    <base_dir>/shards/{shard-NNNNNN.tar,manifest.json,quarantine.jsonl}
    <base_dir>/checkpoints/base/         the starting checkpoint
    <base_dir>/runs/train/               fgclip train --output (export/, summary.json, ...)
    <base_dir>/benchmarks/benchmarks.yaml
    <base_dir>/eval/{metrics.json,report.html,...}
    <base_dir>/mlflow.db, <base_dir>/mlartifacts/   the default MLflow store
"""

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from fgclip_core import storage

RAW = "raw/sample"
ANNOTATED = "annotated"
VALIDATED = "validated"
SHARDS = "shards"
BASE_CHECKPOINT = "checkpoints/base"
TRAIN_RUN = "runs/train"
BENCHMARKS = "benchmarks"
EVAL = "eval"


class WorkspaceResource(ConfigurableResource):
    """The base directory (or URL) every asset of the pipeline writes under."""

    base_dir: str = Field(default=".fgclip/dagster",
                          description="local folder (relative to the working directory) or URL such as s3://b/p")

    def url(self, *parts: str) -> str:
        """``base_dir/parts`` as an absolute local path or a URL (what fgclip_core functions take)."""
        base = self.base_dir if storage.is_remote(self.base_dir) else str(Path(self.base_dir).resolve())
        return storage.join(base, *parts)

    def local_path(self, *parts: str) -> Path:
        """Same, for steps that need a local folder (training, evaluation, sample copy)."""
        if storage.is_remote(self.base_dir):
            raise NotImplementedError(f"{self.base_dir}: this step needs a local workspace for now")
        return Path(self.url(*parts))


# The model side's resources live in orchestration.model_resources (imported here for old imports).
from orchestration.model_resources import MLflowResource, TrainingResource  # noqa: E402,F401
