"""Recall@1/5/10 on 25,000 texts x 5,000 images (d=512): chunked counting vs full-matrix argsort.

Target: the chunked implementation (``fgclip_core.eval.metrics``) is >= 3x faster than the
straightforward full-matrix argsort (``fgclip_core.eval.metrics_reference``) and gives identical
ranks. Each implementation runs in its own fresh process so that its peak memory (the rise of the
process's max RSS over the inputs it was handed) is measured separately.

    python benchmarks/retrieval_metrics.py [--images 5000] [--per-image 5] [--dim 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_inputs(n_images: int, per_image: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(n_images, dim, generator=g), dim=-1)
    t2i = torch.arange(n_images).repeat_interleave(per_image)
    # Texts near their image so the recalls are neither 0 nor 1.
    txt = torch.nn.functional.normalize(img[t2i] + 0.25 * torch.randn(t2i.numel(), dim, generator=g), dim=-1)
    return img, txt, t2i


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _worker(which: str, args: argparse.Namespace, queue: mp.Queue) -> None:
    torch.set_num_threads(args.threads)
    from fgclip_core.eval.metrics import retrieval_metrics, retrieval_ranks
    from fgclip_core.eval.metrics_reference import reference_retrieval_ranks

    img, txt, t2i = make_inputs(args.images, args.per_image, args.dim)
    before = _max_rss_mb()
    start = time.perf_counter()
    if which == "chunked":
        ranks = retrieval_ranks(img, txt, t2i, chunk_size=args.chunk)
    else:
        ranks = reference_retrieval_ranks(img, txt, t2i)
    seconds = time.perf_counter() - start
    queue.put({"which": which, "seconds": seconds, "peak_mb": _max_rss_mb() - before,
               "metrics": retrieval_metrics(ranks), "i2t": ranks.i2t.tolist(), "t2i": ranks.t2i.tolist()})


def run(which: str, args: argparse.Namespace) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_worker, args=(which, args, queue))
    p.start()
    out = queue.get()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"{which} worker failed with exit code {p.exitcode}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--per-image", type=int, default=5)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    base = run("full-argsort", args)
    fast = run("chunked", args)
    identical = base["i2t"] == fast["i2t"] and base["t2i"] == fast["t2i"]
    n_texts = args.images * args.per_image
    print(f"recall@1/5/10, {n_texts} texts x {args.images} images, d={args.dim}, threads={args.threads}")
    for r in (base, fast):
        print(f"  {r['which']:<13} {r['seconds']:8.2f} s   peak +{r['peak_mb']:8.1f} MB")
    speedup = base["seconds"] / fast["seconds"]
    mem_ratio = base["peak_mb"] / max(fast["peak_mb"], 1e-9)
    print(f"  speed-up x{speedup:.1f} (target >= 3), peak memory ratio x{mem_ratio:.1f}, identical ranks: {identical}")
    print("  metrics:", {k: round(v, 4) for k, v in fast["metrics"].items()})
    if not identical:
        print("FAIL: chunked ranks differ from the full-matrix reference")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
