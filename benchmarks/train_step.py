"""Stage-2 training-step throughput: fused + trimmed step vs the official-shape step, and DeepSpeed overhead.

Prints, on one batch and one set of weights:
  (a) samples/s of the fused, trimmed step (texts cut at their longest EOS, all short-mode texts in
      one forward, one vision pass for global + regions);
  (b) samples/s of the naive step (texts padded to 248/77, one forward per text kind, a second
      vision pass for regions, every negative slot encoded), as the official code does;
      the losses must agree (relative difference <= 1e-5, checked in fp32) -> ratio a/b (target >= 2);
  (c) DeepSpeed engine (ZeRO stage --zero) against a plain PyTorch loop (the trainer's AdamW, clipping) on the same
      model and loss -> overhead (target <= 10%);
  model TFLOP/s of the fused step (FLOPs counted by torch's FlopCounterMode), and on a GPU (bf16) its MFU.

    python benchmarks/train_step.py                      # tiny arch on CPU
    python benchmarks/train_step.py --arch ViT-B-16 --batch 32 --device cuda
    python benchmarks/train_step.py --only-deepspeed --ranks 2      # (c) vs DDP on 2 local processes
    python benchmarks/train_step.py --only-deepspeed --arch ViT-B-16 --batch 8 --rounds 3 --iters 1 --warmup 1

On CPU the C allocator matters for (c): glibc returns every freed block of >= 32 MB to the kernel, and
DeepSpeed allocates parameter-sized buffers every step, which are then page-faulted in again (ViT-B-16:
~1 s per step). ``--allocator`` (default auto: tcmalloc when installed, ``make cpu-allocator``) sets it for
both sides alike and the first line prints which one ran.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fgclip_core.losses import LossConfig, fgclip_loss
from fgclip_core.model import FGCLIPModel, load_arch
from fgclip_core.train.allocator import CPU_ALLOCATORS, allocator_env, loaded_allocator, preload_changes
from fgclip_core.train.launch import free_port, launched_by_launcher
from fgclip_core.train.step import FGCLIPTrainModule, naive_features, to_float32
from fgclip_core.train.synthetic import SyntheticBatches, TextSpec

# dense bf16 peak TFLOP/s per device name fragment (vendor datasheets)
PEAK_BF16 = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def report(*parts: object) -> None:
    """print on rank 0 only (``--ranks N`` runs this script N times)."""
    if os.environ.get("RANK", "0") == "0":
        print(*parts, flush=True)


def padded_text_features(model: FGCLIPModel, ids: torch.Tensor, short: bool) -> torch.Tensor:
    """The official code's text cost: every padded position through every layer, then EOS pooling."""
    tm = model.text_model
    x = tm.final_layer_norm(tm.encoder(tm.embeddings(ids, not short), causal=True))
    pooled = x[torch.arange(x.shape[0], device=x.device), (ids == tm.cfg.eos_token_id).int().argmax(-1)]
    return (model.text_projection if short else model.text_filip_projection)(pooled)


class NaiveStep(torch.nn.Module):
    """Official-shape step on the same weights as a fused ``FGCLIPTrainModule``."""

    def __init__(self, fused: FGCLIPTrainModule):
        super().__init__()
        self.fused = fused

    def forward(self, batch):
        f = self.fused
        feats, _ = naive_features(f.model, batch, f.stage, f.eos_id, f.loss_cfg,
                                  text_fn=lambda ids, short: padded_text_features(f.model, ids, short))
        sc = f.scales
        return fgclip_loss(to_float32(feats), sc["logit_scale"][0], sc["logit_scale_finegraind"][0],
                           sc["logit_scale_hardneg"][0], f.loss_cfg)


def make_batch(model: FGCLIPModel, batch: int, seed: int):
    t = model.config.text_config
    src = SyntheticBatches(f"synthetic://?samples={batch}", batch, 0, 1, seed, model.config.vision_config.image_size,
                           TextSpec(t.vocab_size, t.bos_token_id, t.eos_token_id, t.pad_token_id), 4, 10)
    return src.batch(0)


def time_steps(fn, iters: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def paired(base_fn, other_fn, args, device: torch.device) -> tuple[float, float, float]:
    """Alternate blocks of the two (shared machines drift); median times and median paired ratio other/base."""
    for _ in range(args.warmup):
        base_fn()
        other_fn()
    tb, to = [], []
    for _ in range(args.rounds):
        tb.append(time_steps(base_fn, args.iters, 0, device))
        to.append(time_steps(other_fn, args.iters, 0, device))
    ratios = sorted(o / b for o, b in zip(to, tb, strict=True))
    return statistics.median(tb), statistics.median(to), statistics.median(ratios)


def fwd_bwd(module: torch.nn.Module, batch, fused: bool | None = None):
    def step():
        if fused is not None:
            module.fused = fused
        module.zero_grad(set_to_none=True)
        module(batch)["loss"].backward()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=3, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=5, help="alternating timed blocks per pair")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--unfused", action="store_true", help="also time per-kind forwards with trimming")
    ap.add_argument("--zero", type=int, default=2, choices=[0, 1, 2, 3])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                    help="training dtype (auto: bf16 on CUDA, fp32 on CPU); the exactness check is always fp32")
    ap.add_argument("--only-deepspeed", action="store_true",
                    help="skip the exactness check and (a)/(b): for big archs on CPU, where the naive step takes minutes")
    ap.add_argument("--ranks", type=int, default=1,
                    help="(c) on N local processes: DeepSpeed vs torch DistributedDataParallel (implies --only-deepspeed)")
    ap.add_argument("--allocator", default="auto", choices=CPU_ALLOCATORS,
                    help="C allocator of the measuring process(es), both sides alike (auto: tcmalloc when installed); "
                         "see fgclip_core/train/allocator.py")
    args = ap.parse_args()
    env, _ = allocator_env(args.allocator)
    if preload_changes(env):   # the allocator is chosen at process start: run this script again
        raise SystemExit(subprocess.call([sys.executable, __file__, *sys.argv[1:]], env=env))
    if args.ranks > 1:
        args.only_deepspeed = True
        if not launched_by_launcher():   # re-run this script as N torchrun workers
            raise SystemExit(subprocess.call(
                [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.ranks}", "--nnodes=1",
                 "--master_addr=127.0.0.1", f"--master_port={free_port()}", __file__, *sys.argv[1:]],
                env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}))
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":   # one GPU per local rank under --ranks
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    torch.manual_seed(0)
    base = FGCLIPModel(load_arch(args.arch))
    eos = base.config.text_config.eos_token_id
    rank = int(os.environ.get("RANK", "0"))
    batch = make_batch(base, args.batch, seed=1 + rank)   # each rank its own samples, as in training
    cfg = LossConfig()

    dtype = torch.bfloat16 if args.dtype == "bf16" or (args.dtype == "auto" and device.type == "cuda") else torch.float32
    b = batch.to(device)
    b.pixel_values = b.pixel_values.to(dtype)
    report(f"device={device} arch={args.arch} batch={args.batch} per rank x {args.ranks} rank(s) boxes=4 negatives=10 "
           f"params={sum(p.numel() for p in base.parameters()) / 1e6:.1f}M threads={args.threads} "
           f"allocator={loaded_allocator()}")
    if not args.only_deepspeed:
        check_and_compare(base, batch, b, dtype, cfg, eos, args, device)
    deepspeed_overhead(base, b, dtype, cfg, eos, args, device)


def check_and_compare(base, batch, b, dtype, cfg, eos, args, device) -> None:
    # -- exactness, fp32 --------------------------------------------------------------------------
    m32 = copy.deepcopy(base).to(device)
    b32 = batch.to(device)
    w32 = FGCLIPTrainModule(m32, 2, cfg, eos, fused=True)
    with torch.no_grad():
        lf = w32(b32)["loss"].item()
        ln = NaiveStep(w32)(b32)["loss"].item()
    rel = abs(lf - ln) / max(abs(ln), 1e-12)
    report(f"loss fused={lf:.8f} naive={ln:.8f} rel_diff={rel:.2e} ({'OK' if rel <= 1e-5 else 'MISMATCH'} <= 1e-5)")
    if rel > 1e-5:
        raise SystemExit("fused and naive losses differ")

    # -- (a) vs (b) -----------------------------------------------------------------------------
    model = copy.deepcopy(base).to(device=device, dtype=dtype)
    module = FGCLIPTrainModule(model, 2, cfg, eos, fused=True)
    t_n, t_f, ratio = paired(fwd_bwd(NaiveStep(module), b), fwd_bwd(module, b), args, device)
    sps_f, sps_n = args.batch / t_f, args.batch / t_n
    report(f"(a) fused+trimmed step : {sps_f:9.2f} samples/s  ({t_f * 1e3:.1f} ms/step, fwd+bwd, {dtype})")
    report(f"(b) naive (official)   : {sps_n:9.2f} samples/s  ({t_n * 1e3:.1f} ms/step)")
    report(f"    ratio a/b = {1 / ratio:.2f}x (median of {args.rounds} paired rounds; target >= 2x)")
    if args.unfused:  # one forward per text kind + separate vision passes, but trimmed texts
        t_u, _, ratio_u = paired(fwd_bwd(module, b, fused=False), fwd_bwd(module, b, fused=True), args, device)
        report(f"    unfused but trimmed  : {args.batch / t_u:9.2f} samples/s; fused/unfused = {1 / ratio_u:.2f}x")

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:   # model FLOPs of one fused fwd+bwd (matmuls, convs, attention)
        fwd_bwd(module, b)()
    flops = fc.get_total_flops()
    tflops = flops / t_f / 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        mfu = f"{100 * tflops / peak:.1f}% of {peak:.0f} TFLOP/s bf16 peak" if peak else "n/a (unknown peak)"
    else:
        name, mfu = "CPU", "n/a on CPU"
    report(f"    fused step: {flops / 1e12:.4f} TFLOP/step, {tflops:.3f} TFLOP/s, MFU {mfu} ({name})")


def deepspeed_overhead(base, b, dtype, cfg, eos, args, device) -> None:
    # -- (c) DeepSpeed vs plain PyTorch -----------------------------------------------------------
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if device.type == "cuda" else "cpu")
    from fgclip_core.train.config import TrainConfig
    from fgclip_core.train.ds_config import build_ds_config
    from fgclip_core.train.engine import build_optimizer, param_groups
    from fgclip_core.train.launch import init_distributed

    dist = init_distributed()
    tcfg = TrainConfig(data={"loader": {"batch_size": args.batch}},
                       deepspeed={"zero_stage": args.zero, "precision": "bf16" if dtype == torch.bfloat16 else "fp32"},
                       optim={"lr": 1e-5, "warmup_steps": 0, "schedule": "constant"})

    def groups(m):
        gs = param_groups(m, tcfg)
        for g in gs:
            g.pop("param_names")
        return gs

    plain = FGCLIPTrainModule(copy.deepcopy(base), 2, cfg, eos).to(device=device, dtype=dtype)
    opt = build_optimizer(groups(plain), tcfg)   # the trainer's AdamW (fused kernel) on both sides
    # One rank: the plain loop. Several: torch's own data parallelism (gradients all-reduced in buckets
    # during backward), what a user would run instead of DeepSpeed.
    run_plain = plain if dist.world == 1 else torch.nn.parallel.DistributedDataParallel(
        plain, device_ids=[device.index] if device.type == "cuda" else None)

    def plain_step():
        loss = run_plain(b)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), tcfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    import deepspeed

    ds_module = FGCLIPTrainModule(copy.deepcopy(base), 2, cfg, eos)
    ds_opt = build_optimizer(groups(ds_module), tcfg)
    engine, *_ = deepspeed.initialize(model=ds_module, optimizer=ds_opt,
                                      config=build_ds_config(tcfg, device.type))

    def ds_step():
        loss = engine(b)["loss"]
        engine.backward(loss)
        engine.step()

    tp, td, ratio = paired(plain_step, ds_step, args, device)
    report(f"(c) plain PyTorch loop{' (DDP)' if dist.world > 1 else ''} : {args.batch / tp:9.2f} samples/s per rank  "
           f"({tp * 1e3:.1f} ms/step)")
    report(f"    DeepSpeed ZeRO-{args.zero}    : {args.batch / td:9.2f} samples/s per rank  ({td * 1e3:.1f} ms/step)")
    report(f"    DeepSpeed overhead = {100 * (ratio - 1):+.1f}% (median of {args.rounds} paired rounds; target <= 10%); "
           f"{(td - tp) * 1e3:+.1f} ms/step: a per-step cost that grows with the parameter count, not the batch")


if __name__ == "__main__":
    main()
