"""Resources of the model side: where runs and models are tracked (MLflow) and how training is launched.
Settings only; heavy imports (mlflow) happen inside methods so loading the definitions stays fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from fgclip_core.train.allocator import CpuAllocator
from orchestration import settings


class MLflowResource(ConfigurableResource):
    """MLflow tracking/registry location; default ``MLFLOW_TRACKING_URI`` or ``sqlite:///.fgclip/mlflow.db``
    with artifacts in ``mlartifacts/`` next to the database."""

    tracking_uri: str | None = Field(default=None, description="e.g. http://mlflow:5000; default: see above")

    def uri(self) -> str:
        uri = self.tracking_uri or settings.mlflow_tracking_uri()
        db = self._sqlite_path(uri)
        if db is not None and not db.exists():
            # A fresh store: create it with its artifact root next to the database (MLflow's default
            # is ./mlruns under whatever the working directory is). Under a lock: two runs starting at
            # once would otherwise both run the schema migrations on one file.
            import fcntl

            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            db.parent.mkdir(parents=True, exist_ok=True)
            with open(db.with_name(db.name + ".create.lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not db.exists():
                    tmp = db.with_name(f".{db.name}.creating-{os.getpid()}-{id(lock)}")
                    SqlAlchemyStore(f"sqlite:///{tmp}", self.artifact_root()).engine.dispose()
                    tmp.rename(db)
        return uri

    @staticmethod
    def _sqlite_path(uri: str) -> Path | None:
        return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None

    def artifact_root(self) -> str | None:
        """Where experiments this pipeline creates keep their artifacts (None: the server decides)."""
        db = self._sqlite_path(self.tracking_uri or settings.mlflow_tracking_uri())
        return None if db is None else (db.parent / "mlartifacts").resolve().as_uri()

    def experiment_id(self, name: str) -> str:
        """Id of experiment ``name``, created (with the artifact root above) when missing."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(self.uri())
        exp = client.get_experiment_by_name(name)
        if exp:
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=self.artifact_root())
        except MlflowException:  # made by a concurrent run in the meantime
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

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
    torch_extensions_dir: str | None = Field(
        default=None, description="DeepSpeed's JIT-compiled ops cache (kept between runs); default "
                                  "TORCH_EXTENSIONS_DIR or <FGCLIP_HOME>/torch_extensions")

    def command(self, data: str | list[str], output: str, init: str, run_name: str | None = None) -> list[str]:
        save_every = self.save_every if self.save_every is not None else max(1, self.max_steps // 2)
        datas = [data] if isinstance(data, str) else list(data)
        cmd = [sys.executable, "-m", "fgclip_core", "train", "--recipe", self.recipe]
        for d in datas:
            cmd += ["--data", d]
        cmd += ["--output", output, "--init", init, "--max-steps", str(self.max_steps),
                "--save-every", str(save_every), "--nproc", str(self.nproc), "--cpu-allocator", self.cpu_allocator,
                "--no-progress",
                "--set", f"tracking.experiment={self.experiment}"]
        if run_name:
            cmd += ["--set", f"tracking.run_name={run_name}"]
        for o in self.overrides:
            cmd += ["--set", o]
        return cmd

    def env(self, tracking_uri: str) -> dict[str, str]:
        ext = self.torch_extensions_dir or os.environ.get("TORCH_EXTENSIONS_DIR") or str(
            settings.fgclip_home() / "torch_extensions")
        return {"MLFLOW_TRACKING_URI": tracking_uri,
                "TORCH_EXTENSIONS_DIR": str(Path(ext).resolve()),
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        # DS_ACCELERATOR: fgclip_core picks cuda or cpu when it is unset
