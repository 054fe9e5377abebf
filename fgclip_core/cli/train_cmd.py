"""`fgclip train` (owned by the training issue): thin wrapper over ``fgclip_core.train``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import cast

import click

from fgclip_core.cli.errors import ReportingCommand
from fgclip_core.train.allocator import CPU_ALLOCATORS

log = logging.getLogger(__name__)


@click.command(name="train", cls=ReportingCommand)
@click.option("--recipe", help="Shipped recipe name (tiny-cpu-stage1, tiny-cpu-stage2, stage1, stage2, ...).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Training config file (YAML/JSON).")
@click.option("--data", "data_url", multiple=True,
              help="Shard folder or URL (manifest.json + shard-*.tar), or synthetic://. Repeat it to train on "
                   "several shard sets at once (e.g. one per image batch).")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--init", "init_dir", help="Start from an FG-CLIP or transformers CLIP checkpoint directory.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Optimizer steps.")
@click.option("--save-every", type=click.IntRange(min=0), help="Checkpoint every N steps (0: only at the end).")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local processes (torchrun-style). Under torchrun/deepspeed the launcher decides.")
@click.option("--cpu-allocator", type=click.Choice(CPU_ALLOCATORS), default="system", show_default=True,
              help="C allocator of the training processes; tcmalloc spares CPU runs the page faults of DeepSpeed's "
                   "per-step buffers (auto: tcmalloc when installed; system: whatever this process runs with). "
                   "tcmalloc/auto start the training in child processes (as --nproc does).")
@click.option("--resume", type=click.Choice(["latest"]), help="Continue from the newest intact checkpoint.")
@click.option("--seed", type=int, help="Seed for weights init and data order.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Config override, e.g. --set optim.lr=1e-5 --set deepspeed.zero_stage=3 (repeatable).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--local_rank", "--local-rank", "local_rank", type=int, hidden=True,
              help="Passed by the deepspeed launcher; LOCAL_RANK is used instead.")
def train(recipe: str | None, config_file: str | None, data_url: tuple[str, ...], output: str, init_dir: str | None,
          max_steps: int | None, save_every: int | None, nproc: int, cpu_allocator: str, resume: str | None,
          seed: int | None,
          overrides: tuple[str, ...], no_progress: bool, local_rank: int | None) -> None:
    """Train an FG-CLIP model with DeepSpeed (stage 1 or 2).

    \b
    fgclip train --recipe tiny-cpu-stage2 --data shards/ --output runs/t2 --nproc 2
    torchrun --nproc_per_node 8 -m fgclip_core.train --recipe stage2 --data s3://b/shards --output runs/s2
    deepspeed --hostfile hosts --module fgclip_core.train --recipe stage2 --data s3://b/shards --output runs/s2
    """
    from fgclip_core.config import ConfigError
    from fgclip_core.train.allocator import CpuAllocator, allocator_env, loaded_allocator, preload_changes
    from fgclip_core.train.config import resolve_config
    from fgclip_core.train.launch import launched_by_launcher, spawn_local

    if local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
    flags = list(overrides)
    if data_url:
        flags.append(f"data.url={json.dumps(data_url[0] if len(data_url) == 1 else list(data_url))}")
    if init_dir is not None:
        flags.append(f"model.init={json.dumps(init_dir)}")
    if max_steps is not None:
        flags.append(f"max_steps={max_steps}")
    if save_every is not None:
        flags.append(f"save_every={save_every}")
    if seed is not None:
        flags += [f"seed={seed}", f"data.loader.seed={seed}"]
    try:
        cfg = resolve_config(recipe, config_file, flags)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    if not cfg.data.url:
        raise click.UsageError("no training data: pass --data URL (or set data.url in the config)")
    out = Path(output)

    worker_env: dict[str, str] | None = None
    if cpu_allocator != "system":
        if launched_by_launcher():
            if loaded_allocator() != "tcmalloc":
                log.warning("--cpu-allocator %s ignored: the launcher started this process (allocator: %s); set "
                            "LD_PRELOAD in the launcher's environment instead", cpu_allocator, loaded_allocator())
        else:
            try:
                worker_env, chosen = allocator_env(cast(CpuAllocator, cpu_allocator))
            except FileNotFoundError as e:
                raise click.UsageError(str(e)) from e
            log.info("CPU allocator of the training processes: %s", chosen)
    restart = worker_env is not None and preload_changes(worker_env)
    if (nproc > 1 or restart) and not launched_by_launcher():
        out.mkdir(parents=True, exist_ok=True)
        resolved = out / "train_config.json"
        dumped, worker_env = _config_for_workers(cfg, worker_env)
        resolved.write_text(json.dumps(dumped, indent=2))
        args = ["--config", str(resolved), "--output", str(out)]
        if resume:
            args += ["--resume", resume]
        if no_progress:
            args.append("--no-progress")
        result = spawn_local(nproc, args, worker_env)
        if result.errors:   # the workers' own reason, once (each rank handed it over instead of printing)
            raise click.ClickException("; ".join(result.errors))
        if result.returncode != 0:
            raise click.ClickException(f"training failed (exit code {result.returncode}); see the log above and {out}")
        _print_summary(out / "summary.json")
        return
    if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) != nproc:
        log.warning("--nproc %d ignored: the launcher started WORLD_SIZE=%s processes", nproc, os.environ["WORLD_SIZE"])
    _run_worker(cfg, out, resume is not None, not no_progress)


def _config_for_workers(cfg, env: dict[str, str] | None) -> tuple[dict, dict[str, str] | None]:
    """The config the workers read from ``OUTPUT/train_config.json`` and their environment: a tracking URI
    with credentials travels in ``MLFLOW_TRACKING_URI`` (the workers' environment), never in the file."""
    from fgclip_core.redact import strip_userinfo

    dumped = cfg.model_dump(mode="json")
    uri = cfg.tracking.uri
    if uri and strip_userinfo(uri)[1] is not None:
        dumped["tracking"]["uri"] = None
        env = {**(os.environ if env is None else env), "MLFLOW_TRACKING_URI": uri}
    return dumped, env


def _run_worker(cfg, out: Path, resume: bool, progress: bool) -> None:
    from fgclip_core.config import ConfigError
    from fgclip_core.data.shard_check import CorruptShardError
    from fgclip_core.model.checkpoint import CheckpointError
    from fgclip_core.train.engine import NonFiniteLossError, Trainer, summary_dict

    try:
        summary = Trainer(cfg, out, resume=resume, progress=progress).run()
    except (NonFiniteLossError, CorruptShardError, CheckpointError, ConfigError) as e:
        raise click.ClickException(str(e)) from e
    if int(os.environ.get("RANK", "0")) == 0:
        path = out / "summary.json"
        path.write_text(json.dumps(summary_dict(summary), indent=2))
        if os.environ.get("FGCLIP_SPAWNED") != "1":  # else the parent prints it
            _print_summary(path)


def _print_summary(path: Path) -> None:
    if not path.is_file():
        return
    from rich.console import Console
    from rich.table import Table

    data = json.loads(path.read_text())
    table = Table(title="fgclip train", show_header=False)
    for key in ("steps", "samples", "skipped_nonfinite", "final_loss", "seconds", "samples_per_s", "resumed_from",
                "checkpoint", "export_dir", "tracking_uri", "run_id", "cpu_allocator"):
        v = data.get(key)
        table.add_row(key, f"{v:.4g}" if isinstance(v, float) else str(v))
    for f in data.get("tracking_failures") or []:
        table.add_row("tracking warning", f)
    Console().print(table)
