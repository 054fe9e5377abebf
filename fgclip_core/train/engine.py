"""The training loop on DeepSpeed: setup, micro-batch steps, checkpoints/resume, export. No model code.

Run once per process (``launch`` decides how many). Rank 0 alone logs, writes the export and the
summary; every rank writes its own trainer state into each checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgclip_core import storage
from fgclip_core.data.batch import TrainBatch
from fgclip_core.model.checkpoint import resolve_local
from fgclip_core.train import checkpoint as ckpt
from fgclip_core.train import ds_checkpoint
from fgclip_core.train.allocator import loaded_allocator
from fgclip_core.train.config import TrainConfig
from fgclip_core.train.deepspeed_import import load_deepspeed
from fgclip_core.train.ds_config import build_ds_config, resolve_precision
from fgclip_core.train.launch import DistInfo, barrier, init_distributed
from fgclip_core.train.pipes import PipesReporter
from fgclip_core.train.scales import clamp_scales_, reset_region_scales_
from fgclip_core.train.shared_output import check_shared_output
from fgclip_core.train.step import FGCLIPTrainModule
from fgclip_core.train.tracking import NullTracker, Tracker, git_commit

# DeepSpeed's ZeRO partitioning calls torch.distributed.all_gather_into_tensor, which torch 2.13 deprecates
# with a FutureWarning on every step; it is DeepSpeed's to change, not a fault of the run.
warnings.filterwarnings("ignore", message=r".*all_gather_into_tensor.* is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message=r".*reduce_scatter_tensor.* is deprecated", category=FutureWarning)
log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row; a checkpoint was written before raising."""


@dataclass
class TrainSummary:
    steps: int
    micro_batches: int
    samples: int
    skipped_nonfinite: int
    final_loss: float | None
    seconds: float
    samples_per_s: float
    resumed_from: str | None
    checkpoint: str | None
    export_dir: str | None
    tracking_uri: str | None
    run_id: str | None
    tracking_failures: list[str] = field(default_factory=list)
    cpu_allocator: str = "system"     # C allocator the training process ran with (allocator.loaded_allocator)


# ---------------------------------------------------------------------------------------------- setup


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig):
    from fgclip_core.model import FGCLIPModel, load_arch

    if cfg.model.init:
        model = FGCLIPModel.from_pretrained(cfg.model.init)
    else:
        model = FGCLIPModel(load_arch(cfg.model.arch))
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


TEXT_PREFIXES = ("text_model.", "text_projection.", "text_filip_projection.")


def _model_name(name: str) -> str:
    """``model.x`` / ``scales.logit_scale`` (train wrapper) -> the FG-CLIP model's own name."""
    for prefix in ("model.", "scales."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _no_decay_clip(name: str, p: torch.nn.Parameter) -> bool:
    """``optim.no_decay: clip``: norms, biases, logit scales, class/position/token embeddings."""
    return p.ndim < 2 or ("embedding" in name and "patch_embedding" not in name)


def _layernorm_param_names(model: torch.nn.Module) -> set[str]:
    return {f"{mod_name}.{p_name}" if mod_name else p_name
            for mod_name, mod in model.named_modules() if isinstance(mod, torch.nn.LayerNorm)
            for p_name, _ in mod.named_parameters(recurse=False)}


def _no_decay_official(name: str, layernorm: set[str]) -> bool:
    """``optim.no_decay: official``: the official FG-CLIP trainer's rule (the HF Trainer one): LayerNorm
    weights and every parameter named ``*bias*``; embeddings and logit scales are decayed."""
    return name in layernorm or "bias" in name


def build_optimizer(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.AdamW:
    """The trainer's AdamW (``optim.implementation`` picks the kernel); the benchmark's plain loop uses it too."""
    impl = cfg.optim.implementation
    kernel = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[impl]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps, **kernel)


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: (decay | no decay, by ``optim.no_decay``) x (text tower | rest), empty groups dropped."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    names: dict[tuple[bool, bool], list[str]] = {}
    layernorm = _layernorm_param_names(model)
    for full_name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        name = _model_name(full_name)
        no_decay = (_no_decay_official(full_name, layernorm) if cfg.optim.no_decay == "official"
                    else _no_decay_clip(name, p))
        key = (no_decay, cfg.optim.text_lr is not None and name.startswith(TEXT_PREFIXES))
        groups.setdefault(key, []).append(p)
        names.setdefault(key, []).append(full_name)
    out = []
    for (no_decay, text), params in sorted(groups.items()):
        out.append({"params": params, "weight_decay": 0.0 if no_decay else cfg.optim.weight_decay,
                    "lr": cfg.optim.text_lr if text else cfg.optim.lr,
                    "name": f"{'text' if text else 'all'}-{'no_decay' if no_decay else 'decay'}",
                    "param_names": names[(no_decay, text)]})
    return out


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warmup from 0, then cosine down to ``min_lr_ratio`` at ``max_steps`` (or constant)."""
    warm, total, floor = cfg.optim.warmup_steps, cfg.max_steps, cfg.optim.min_lr_ratio

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.optim.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


# ---------------------------------------------------------------------------------------------- trainer


class Trainer:
    def __init__(self, cfg: TrainConfig, output: str | Path, resume: bool = False,
                 batches: Callable[[DistInfo, Any], Any] | None = None, progress: bool = True):
        self.cfg = cfg
        self.output = Path(output)
        self.resume = resume
        self.ckpt_root = self.output / "checkpoints"
        self.export_dir = self.output / "export"
        self._batches_factory = batches
        self.progress = progress

    # -- setup ----------------------------------------------------------------------------------
    def _setup(self) -> None:
        deepspeed = load_deepspeed()

        cfg = self.cfg
        self.dist = init_distributed()
        if self.dist.rank == 0:
            self.output.mkdir(parents=True, exist_ok=True)
            if cfg.model.init and storage.is_remote(str(cfg.model.init)):
                resolve_local(cfg.model.init)  # an s3:// start: fetched once into the cache, the other ranks find it
        barrier()
        check_shared_output(self.output, self.dist.rank, self.dist.world)   # nodes with separate disks fail here
        self.device = self.dist.device
        self.precision = resolve_precision(cfg, self.device.type)
        if self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(cfg.seed)  # same weights on every rank when starting from scratch
        model = build_model(cfg)
        self.model_config = model.config
        self.eos_id = model.config.text_config.eos_token_id
        self.module = FGCLIPTrainModule(model, cfg.stage, cfg.loss, self.eos_id,
                                        bucket_overhead_tokens=cfg.model.text_bucket_overhead_tokens)
        if cfg.model.reset_region_scales_at_start:
            # before DeepSpeed copies the parameters; a resumed run gets the checkpoint's values back
            done = reset_region_scales_(self.module.scales)
            if self.dist.rank == 0 and done:
                log.info("model.reset_region_scales_at_start: %s set to logit_scale (%.4f)", ", ".join(done),
                         self.module.scales["logit_scale"].detach().item())
        groups = param_groups(self.module, cfg)
        for g in groups:
            g.pop("param_names")
        optimizer = build_optimizer(groups, cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
        self.ds_config = build_ds_config(cfg, self.device.type)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.module, optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config)
        ds_checkpoint.install(self.engine)   # DeepSpeed's files are read with weights_only + an allow-list
        seed_everything(cfg.seed + 1000 * self.dist.rank)  # per-rank stream for anything random later
        self.assets_dir = self._prepare_assets()

    def _make_batches(self):
        if self._batches_factory is not None:
            return self._batches_factory(self.dist, self)
        from fgclip_core.train.data_source import open_batches

        return open_batches(self.cfg, self.dist, self.model_config, self.assets_dir)

    def _prepare_assets(self) -> Path:
        """Tokenizer + image processor for the loader and the export: from ``--init``, else built."""
        from fgclip_core.model import CheckpointError, ImageProcessor, build_clip_tokenizer, load_tokenizer
        from fgclip_core.model.processing import ImageProcessorConfig

        if self.cfg.model.init:
            src = resolve_local(self.cfg.model.init)
            try:
                load_tokenizer(src)
                ImageProcessor.from_pretrained(src)
            except Exception as e:
                raise CheckpointError(f"--init {self.cfg.model.init}: tokenizer/image processor not loadable ({e}); "
                                   "`fgclip model convert` writes a complete directory") from e
            return src
        out = self.output / "processor"
        if self.dist.rank == 0 and not (out / "preprocessor_config.json").is_file():
            tmp = out.with_name("processor.tmp")
            tmp.mkdir(parents=True, exist_ok=True)
            build_clip_tokenizer(tmp)
            ImageProcessor(ImageProcessorConfig(size=self.model_config.vision_config.image_size)).save_pretrained(tmp)
            if out.exists():
                import shutil

                shutil.rmtree(out)
            os.replace(tmp, out)
        barrier()
        return out

    # -- checkpoints ----------------------------------------------------------------------------
    def _save(self, step: int, position: int, counters: dict[str, int], data_state: dict[str, Any]) -> str:
        tag = ckpt.tag_for(step)
        tag_dir = self.ckpt_root / tag
        self.engine.save_checkpoint(str(self.ckpt_root), tag=tag, client_state={"step": step},
                                    save_latest=False)
        ckpt.save_rank_state(tag_dir, self.dist.rank, {"step": step, "position": position, "data": data_state,
                                                           **counters})
        barrier()
        if self.dist.rank == 0:
            ckpt.write_marker(tag_dir, step)
            for t in ckpt.prune(self.ckpt_root, self.cfg.keep_last):
                log.info("removed old checkpoint %s", t)
        barrier()
        return tag

    def _resume_tag(self) -> str | None:
        tag = ckpt.latest_valid(self.ckpt_root) if self.dist.rank == 0 else None
        obj = [tag]
        if self.dist.world > 1:
            torch.distributed.broadcast_object_list(obj, src=0)
        return obj[0]

    # -- export ---------------------------------------------------------------------------------
    def _export(self) -> Path | None:
        deepspeed = load_deepspeed()

        params = list(self.module.parameters())
        gathered = self.ds_config["zero_optimization"]["stage"] == 3
        ctx = deepspeed.zero.GatheredParameters(params, modifier_rank=0) if gathered else _nullcontext()
        with ctx:
            if self.dist.rank == 0:
                self._write_export(self.module.model.config, self.module.model_state_dict())
        barrier()
        return self.export_dir if self.dist.rank == 0 else None

    def _write_export(self, model_config, state: dict[str, torch.Tensor]) -> None:
        from fgclip_core.model import ImageProcessor, load_tokenizer

        out = self.export_dir
        tmp = out.with_name(out.name + ".tmp")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        from fgclip_core.model import FGCLIPModel

        # a fresh module from the (gathered) tensors: never deepcopy a DeepSpeed-managed module
        export_model = FGCLIPModel(model_config)
        export_model.load_state_dict({n: t.float() for n, t in state.items()}, strict=True)
        export_model.save_pretrained(str(tmp))
        load_tokenizer(self.assets_dir).save_pretrained(tmp)
        ImageProcessor.from_pretrained(self.assets_dir).save_pretrained(tmp)
        if out.exists():
            import shutil

            shutil.rmtree(out)
        os.replace(tmp, out)

    # -- loop -----------------------------------------------------------------------------------
    def run(self) -> TrainSummary:
        self._setup()
        cfg, rank, world = self.cfg, self.dist.rank, self.dist.world
        start = time.perf_counter()
        position, counters, resumed_from, data_state = 0, {"skipped_nonfinite": 0, "samples": 0}, None, None
        if self.resume:
            tag = self._resume_tag()
            if tag is None:
                if rank == 0:
                    log.warning("--resume latest: no usable checkpoint in %s; starting from scratch", self.ckpt_root)
            else:
                state = ckpt.load_rank_state(self.ckpt_root / tag, rank,
                                             required=("step", "position", "data", *counters))
                self.engine.load_checkpoint(str(self.ckpt_root), tag=tag, load_optimizer_states=True,
                                            load_lr_scheduler_states=True)
                position = state["position"]
                counters = {k: state[k] for k in counters}
                data_state = state["data"]
                ckpt.set_rng_state(state["rng"])
                resumed_from = tag
                if self.engine.global_steps != state["step"]:
                    raise ckpt.CheckpointError(f"{self.ckpt_root / tag}: DeepSpeed step {self.engine.global_steps} != trainer step {state['step']}")

        tracker = self._tracker()
        pipes = PipesReporter.open(rank)
        source = self._make_batches()
        if data_state is not None:
            source.load_state_dict(data_state)
        batches: Iterator[TrainBatch] = iter(source)
        bar = self._progress_bar(self.engine.global_steps)
        nonfinite_in_row, last_loss = 0, None
        last_saved = resumed_from  # resuming a finished run must not rewrite its last checkpoint
        window = _Window()
        status = "FAILED"
        try:
            while self.engine.global_steps < cfg.max_steps:
                batch = next(batches).to(self.device)
                position += 1
                if self.precision == "bf16":
                    batch.pixel_values = batch.pixel_values.to(torch.bfloat16)
                out = self.engine(batch)
                loss = out["loss"]
                if not self._all_finite(loss):
                    counters["skipped_nonfinite"] += 1
                    nonfinite_in_row += 1
                    if rank == 0:
                        log.warning("non-finite loss at step %d (micro-batch %d): skipped (%d in a row, %d total)",
                                    self.engine.global_steps, position - 1, nonfinite_in_row,
                                    counters["skipped_nonfinite"])
                    if nonfinite_in_row >= cfg.max_nonfinite_in_row:
                        tag = self._save(self.engine.global_steps, position, counters, source.state_dict())
                        raise NonFiniteLossError(
                            f"{nonfinite_in_row} non-finite losses in a row (limit max_nonfinite_in_row="
                            f"{cfg.max_nonfinite_in_row}) at step {self.engine.global_steps}; checkpoint "
                            f"{self.ckpt_root / tag} written. Lower the lr, check the data, or resume.")
                    continue
                nonfinite_in_row = 0
                self.engine.backward(loss)
                before = self.engine.global_steps
                lrs = [float(g["lr"]) for g in self.optimizer.param_groups]  # the lr this step uses
                self.engine.step()
                if self.engine.global_steps != before and cfg.optim.logit_scale_max is not None:
                    clamp_scales_(self.module.scales.values(), cfg.optim.logit_scale_max)
                stats = self.module.last_stats
                assert stats is not None
                window.add(stats.samples, stats.text_tokens, out)
                counters["samples"] += stats.samples * world
                if self.engine.global_steps == before:
                    continue
                step = self.engine.global_steps
                metrics = self._step_metrics(window, lrs)
                last_loss = metrics["loss"]
                if step % cfg.tracking.log_every == 0 or step == cfg.max_steps:
                    tracker.log_metrics(metrics, step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", sps=f"{metrics['samples_per_s']:.1f}")
                window = _Window()
                if cfg.save_every and step % cfg.save_every == 0:
                    last_saved = self._save(step, position, counters, source.state_dict())
                    pipes.log(f"step {step}/{cfg.max_steps}: loss {metrics['loss']:.4f}, checkpoint {last_saved}")
            if last_saved != ckpt.tag_for(self.engine.global_steps):
                last_saved = self._save(self.engine.global_steps, position, counters, source.state_dict())
            export = self._export() if cfg.export else None
            status = "FINISHED"
            if rank == 0:
                self._final_artifacts(tracker, export)
        finally:
            if bar is not None:
                bar.close()
            tracker.end(status)
            if status != "FINISHED":
                pipes.close()
        seconds = time.perf_counter() - start
        summary = TrainSummary(
            steps=self.engine.global_steps, micro_batches=position, samples=counters["samples"],
            skipped_nonfinite=counters["skipped_nonfinite"], final_loss=last_loss, seconds=seconds,
            samples_per_s=counters["samples"] / seconds if seconds else 0.0, resumed_from=resumed_from,
            checkpoint=str(self.ckpt_root / last_saved) if last_saved else None,
            export_dir=str(export) if export else None,
            tracking_uri=tracker.uri if cfg.tracking.enabled and rank == 0 else None, run_id=tracker.run_id,
            tracking_failures=list(tracker.failures), cpu_allocator=loaded_allocator())
        pipes.report_materialization(asdict(summary))
        pipes.close()
        return summary

    # -- helpers --------------------------------------------------------------------------------
    def _all_finite(self, loss: torch.Tensor) -> bool:
        """Every rank must agree (a rank skipping alone would desynchronise the collectives)."""
        flag = torch.tensor([1.0 if bool(torch.isfinite(loss.detach()).all()) else 0.0], device=self.device)
        if self.dist.world > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item() == 1.0)

    def _step_metrics(self, window: _Window, lrs: list[float]) -> dict[str, float]:
        keys = sorted(window.sums)
        vec = torch.tensor([window.sums[k] / max(1, window.micro) for k in keys]
                           + [float(window.samples), float(window.tokens)], dtype=torch.float64)
        if self.dist.world > 1:
            torch.distributed.all_reduce(vec)
            vec[: len(keys)] /= self.dist.world
        dt = max(time.perf_counter() - window.t0, 1e-9)
        metrics = {k: float(vec[i]) for i, k in enumerate(keys)}
        metrics["samples_per_s"] = float(vec[len(keys)]) / dt
        metrics["tokens_per_s"] = float(vec[len(keys) + 1]) / dt
        for i, lr in enumerate(lrs):
            metrics[f"lr_group{i}"] = lr
        metrics["lr"] = max(lrs)
        return metrics

    def _tracker(self) -> Tracker:
        t: Tracker
        if self.dist.rank != 0 or not self.cfg.tracking.enabled:
            t = NullTracker()
            if self.dist.rank == 0:
                # local copy still wanted when MLflow is switched off
                t = Tracker(self.output, self.cfg.tracking.uri, enabled=False)
                t.start(self.cfg.model_dump(mode="json"), {})
            return t
        tc = self.cfg.tracking
        t = Tracker(self.output, tc.uri, tc.experiment, tc.run_name, tc.system_metrics,
                    system_metrics_interval=tc.system_metrics_interval)
        tags = {"fgclip.stage": str(self.cfg.stage), "fgclip.world_size": str(self.dist.world),
                "fgclip.zero_stage": str(self.cfg.deepspeed.zero_stage), "fgclip.precision": self.precision,
                "fgclip.cpu_allocator": loaded_allocator()}
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        manifest = data_manifest_hash(self.cfg.data.url)
        if manifest:
            tags["fgclip.data_manifest_sha256"] = manifest
        t.start(self.cfg.model_dump(mode="json"), tags)
        if t.client is not None:
            import json

            path = self.output / "tracking" / "deepspeed_config.json"
            path.write_text(json.dumps(self.ds_config, indent=2))
            t.log_artifact(path, "config")
            t.log_artifact(self.output / "tracking" / "params.json", "config")
        return t

    def _final_artifacts(self, tracker: Tracker, export: Path | None) -> None:
        if export is not None:
            tracker.log_artifact(export, "export")
        metrics_file = self.output / "tracking" / "metrics.jsonl"
        if metrics_file.is_file():
            tracker.log_artifact(metrics_file, "logs")

    def _progress_bar(self, initial: int):
        if not self.progress or self.dist.rank != 0:
            return None
        from tqdm import tqdm

        return tqdm(total=self.cfg.max_steps, initial=initial, desc="train", unit="step", dynamic_ncols=True)


def data_manifest_hash(url: str | list[str] | None) -> str | None:
    """SHA-256 of ``URL/manifest.json`` when the data has one (shards written by the data layer); for
    several shard sets, the SHA-256 of their manifests' hashes one per line, in order (None if one has none)."""
    if isinstance(url, list):
        hashes = [data_manifest_hash(u) for u in url]
        if not hashes or any(h is None for h in hashes):
            return None
        import hashlib

        return hashes[0] if len(hashes) == 1 else hashlib.sha256("\n".join(map(str, hashes)).encode()).hexdigest()
    if not url or url.startswith("synthetic://"):
        return None
    import hashlib

    from fgclip_core.storage import filesystem, join

    try:
        fs, path = filesystem(join(url, "manifest.json"))
        with fs.open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except (OSError, FileNotFoundError):
        return None


@dataclass
class _Window:
    """Sums over the micro-batches of one optimizer step (for the step's metrics)."""

    t0: float = field(default_factory=time.perf_counter)
    samples: int = 0
    tokens: int = 0
    micro: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, samples: int, tokens: int, out: dict[str, torch.Tensor]) -> None:
        self.samples += samples
        self.tokens += tokens
        self.micro += 1
        for k, v in out.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def summary_dict(s: TrainSummary) -> dict[str, Any]:
    return asdict(s)
