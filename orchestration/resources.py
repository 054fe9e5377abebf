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

import os
import sys
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from fgclip_core import storage
from fgclip_core.train.allocator import CpuAllocator

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


class MLflowResource(ConfigurableResource):
    """MLflow tracking/registry location; default: a SQLite store with local artifacts in the workspace."""

    workspace: WorkspaceResource
    tracking_uri: str | None = Field(default=None, description="e.g. http://mlflow:5000; default sqlite in the workspace")

    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        db = self.workspace.local_path("mlflow.db")
        uri = f"sqlite:///{db}"
        if not db.exists():
            # A fresh store: create it with its artifact root in the workspace (MLflow's default is
            # ./mlruns under whatever the working directory is), so the Default experiment used by
            # evaluation keeps its files next to the database.
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            db.parent.mkdir(parents=True, exist_ok=True)
            SqlAlchemyStore(uri, self.artifact_root())
        return uri

    def artifact_root(self) -> str | None:
        """Where experiments this pipeline creates keep their artifacts (None: the server decides)."""
        if self.tracking_uri and not self.tracking_uri.startswith("sqlite:"):
            return None
        return self.workspace.local_path("mlartifacts").as_uri()

    def experiment_id(self, name: str) -> str:
        """Id of experiment ``name``, created (with the artifact root above) when missing."""
        from mlflow import MlflowClient

        client = MlflowClient(self.uri())
        exp = client.get_experiment_by_name(name)
        return exp.experiment_id if exp else client.create_experiment(name, artifact_location=self.artifact_root())

    def new_run(self, experiment: str, run_name: str, tags: dict[str, str] | None = None) -> str:
        from mlflow import MlflowClient

        client = MlflowClient(self.uri())
        return client.create_run(self.experiment_id(experiment), run_name=run_name, tags=tags or {}).info.run_id


class TrainingResource(ConfigurableResource):
    """How ``fgclip train`` is launched: recipe, length, local processes; the starting checkpoint."""

    recipe: str = Field(default="tiny-cpu-stage2", description="shipped recipe name (fgclip_core/train/recipes)")
    max_steps: int = Field(default=30, ge=1)
    nproc: int = Field(default=2, ge=1, description="local training processes (torchrun-style, gloo on CPU)")
    cpu_allocator: CpuAllocator = Field(
        default="system", description="C allocator of CPU training processes (fgclip train --cpu-allocator)")
    save_every: int | None = Field(default=None, ge=0, description="default: half of max_steps")
    overrides: list[str] = Field(default_factory=list, description="extra `--set KEY=VALUE` for fgclip train")
    experiment: str = Field(default="fgclip-train", description="MLflow experiment of the training runs")
    init_arch: str = Field(default="tiny", description="architecture of the random starting checkpoint")
    init_seed: int = 0
    init_from: str | None = Field(default=None, description="use this checkpoint as the start instead")
    torch_extensions_dir: str = Field(default=".fgclip/torch_extensions",
                                      description="DeepSpeed's JIT-compiled ops cache (kept between runs)")

    def command(self, data: str, output: str, init: str, run_name: str | None = None) -> list[str]:
        save_every = self.save_every if self.save_every is not None else max(1, self.max_steps // 2)
        cmd = [sys.executable, "-m", "fgclip_core", "train", "--recipe", self.recipe, "--data", data,
               "--output", output, "--init", init, "--max-steps", str(self.max_steps),
               "--save-every", str(save_every), "--nproc", str(self.nproc), "--cpu-allocator", self.cpu_allocator,
               "--no-progress",
               "--set", f"tracking.experiment={self.experiment}"]
        if run_name:
            cmd += ["--set", f"tracking.run_name={run_name}"]
        for o in self.overrides:
            cmd += ["--set", o]
        return cmd

    def env(self, tracking_uri: str) -> dict[str, str]:
        env = {"MLFLOW_TRACKING_URI": tracking_uri,
               "TORCH_EXTENSIONS_DIR": str(Path(self.torch_extensions_dir).resolve()),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        return env  # DS_ACCELERATOR: fgclip_core picks cuda or cpu when it is unset
