"""Loader throughput vs the bare decode + resize cost of the same images.

Builds shards from the bundled sample (records repeated under new ids to get a few hundred
samples) in a temporary folder, then measures, for 1 and 2 workers:
- baseline: a plain loop (in W processes for W workers) that decodes each JPEG of the shards with
  PIL and resizes it to the model size: the work no pipeline can avoid;
- loader: ``FineHARDLoader`` samples/s (tar read + JSON + decode + resize + the texts' token ids +
  collation into a ``TrainBatch`` whose pixels are resized uint8; their normalisation runs on the
  device that runs the model, in the train step, as ``TrainBatch.to`` does: it is timed separately
  below and printed as its own line, not hidden). The shards are built as ``fgclip data build-shards
  --tokenizer clip`` (and the demo and the Dagster ``training_shards`` asset by default) build them:
  with every sample's token ids stored (``data.pretok``), which the loader takes because its
  tokenizer's fingerprint matches; ``--no-pretokenise`` builds them without, and the loader runs
  CLIP BPE (behind its word cache) on the ~50 texts per sample (ratio ~0.87 in process).
It prints ``ratio = loader / baseline`` (target >= 0.9), and for the in-process case the same ratio
in CPU seconds (steadier on a shared machine). With 1 worker (the loader in the main process) the
baseline and the loader alternate batch by batch in one process: whole-run pairs swung 0.78-0.93 on
the shared dev box from clock and neighbour changes between the two runs, batch-by-batch alternation
stays within a few hundredths. The JPEG draft mode is applied to both
sides when ``decode_draft`` is on (the default), and to neither when it is off.

    .venv/bin/python benchmarks/loader_throughput.py [--samples 320] [--batch-size 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from fgclip_core.data.config import DataConfig, LoaderConfig, ShardConfig
from fgclip_core.data.loader import FineHARDLoader
from fgclip_core.data.pipeline import build_shards
from fgclip_core.data.shards import shard_urls
from fgclip_core.model.processing import ImageProcessor, build_clip_tokenizer, load_tokenizer
from fgclip_core.sample import materialize_sample


def _prepare(tmp: Path, samples: int, spp: int, tokenizer=None) -> str:
    sample = materialize_sample(tmp / "sample")
    base = [json.loads(line) for line in Path(sample.annotations_path).read_text().splitlines() if line.strip()]
    recs = []
    for i in range(samples):
        r = dict(base[i % len(base)])
        r["id"] = f"{r['id']}-{i:05d}"
        recs.append(r)
    ann = tmp / "ann.jsonl"
    ann.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp / "shards"
    build_shards(str(ann), str(sample.images_root), str(out), DataConfig(shards=ShardConfig(samples_per_shard=spp)),
                 tokenizer=tokenizer)
    return str(out)


def _jpegs(urls: list[str]) -> list[bytes]:
    out = []
    for u in urls:
        with tarfile.open(u) as t:
            out += [t.extractfile(m).read() for m in t.getmembers() if m.name.endswith(".jpg")]
    return out


def _decode_resize(args: tuple[list[bytes], int, bool]) -> int:
    images, size, draft = args
    for data in images:
        img = Image.open(io.BytesIO(data))
        if draft:
            img.draft("RGB", (size, size))
        img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return len(images)


def pool_baseline(images: list[bytes], size: int, draft: bool, workers: int) -> float:
    """Samples per wall second of ``workers`` processes decoding and resizing ``images`` between them."""
    parts = [(images[i::workers], size, draft) for i in range(workers)]
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_decode_resize, [(p[0][:2], size, draft) for p in parts])  # warm the pool
        t = time.perf_counter()
        n = sum(pool.map(_decode_resize, parts))
        return n / (time.perf_counter() - t)


def loader_rate(url: str, tok, proc, cfg: LoaderConfig, n_samples: int) -> float:
    """Samples per wall second of the loader with its DataLoader workers."""
    loader = FineHARDLoader(url, tok, proc, cfg)
    it = iter(loader)
    # Start-up (worker fork, first shard) is not throughput. With W workers, wait for W batches: after
    # only the first, the other workers' first batches (made during start-up) would count as free.
    for _ in range(max(1, cfg.num_workers)):
        next(it)
    t, n = time.perf_counter(), 0
    for b in it:
        n += b.batch_size
        if n >= n_samples:
            break
    return n / (time.perf_counter() - t)


def interleaved_in_process(url: str, tok, proc, cfg: LoaderConfig, images: list[bytes], size: int, draft: bool,
                           batches: int) -> tuple[float, float, float, float]:
    """In one process, alternate one baseline chunk of ``batch_size`` images with one loader batch, so that
    both sides see the same machine state (clock, caches, neighbours) batch by batch. Returns (baseline,
    loader) samples per wall second, then per CPU second."""
    it = iter(FineHARDLoader(url, tok, proc, cfg))
    next(it)
    wall, cpu, count = [0.0, 0.0], [0.0, 0.0], [0, 0]
    at = 0
    for _ in range(batches):
        chunk = [images[(at + k) % len(images)] for k in range(cfg.batch_size)]
        at += cfg.batch_size
        for side in (0, 1):
            t, c = time.perf_counter(), time.process_time()
            n = _decode_resize((chunk, size, draft)) if side == 0 else next(it).batch_size
            wall[side] += time.perf_counter() - t
            cpu[side] += time.process_time() - c
            count[side] += n
    return count[0] / wall[0], count[1] / wall[1], count[0] / cpu[0], count[1] / cpu[1]


def normalisation_ms(url: str, tok, proc, cfg: LoaderConfig, batches: int = 10) -> float:
    """ms per sample of ``TrainBatch.normalized()`` on this CPU: the work the loader leaves to the device."""
    it = iter(FineHARDLoader(url, tok, proc, cfg))
    got = [next(it) for _ in range(batches)]
    t = time.perf_counter()
    for b in got:
        b.normalized()
    return (time.perf_counter() - t) / sum(b.batch_size for b in got) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=320)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5, help="baseline/loader measurements per setting")
    ap.add_argument("--no-draft", action="store_true", help="decode at full size on both sides")
    ap.add_argument("--no-pretokenise", action="store_true",
                    help="build the shards without token ids (as `build-shards` without --tokenizer): the loader tokenises")
    args = ap.parse_args()
    torch.set_num_threads(1)
    draft = not args.no_draft
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        build_clip_tokenizer(tmp / "tok")
        tok, proc = load_tokenizer(tmp / "tok"), ImageProcessor(size=args.size)
        url = _prepare(tmp, args.samples, spp=args.samples // 8, tokenizer=None if args.no_pretokenise else tok)
        images = _jpegs(shard_urls(url))
        probe = FineHARDLoader(url, tok, proc, LoaderConfig())
        ids = ("stored in the shards (build-shards --tokenizer), fingerprint matches" if probe.tokens is not None
               else "tokenised by the loader")
        print(f"{len(images)} samples in {len(shard_urls(url))} shards; image size {args.size}; draft={draft}; "
              f"batch {args.batch_size}; token ids {ids}; pixels "
              f"{'uint8, normalised on the model device' if probe.pixel_batcher is not None else 'float32 per image'}")
        print(f"{'workers':>7} {'baseline/s':>11} {'loader/s':>9} {'ratio':>6} {'cpu ratio':>10}   "
              f"(medians of {args.repeats} interleaved measurements; wall ratio range)")
        for workers in (1, 2):
            cfg = LoaderConfig(batch_size=args.batch_size, num_workers=0 if workers == 1 else workers,
                               mode="resample", shuffle_buffer=64, decode_draft=draft)
            n = args.samples - 2 * args.batch_size
            pairs = []
            for _ in range(args.repeats):
                if workers == 1:   # in-process: alternate batch by batch
                    base, rate, base_cpu, rate_cpu = interleaved_in_process(
                        url, tok, proc, cfg, images, args.size, draft, batches=2 * n // args.batch_size)
                else:              # worker processes: alternate whole runs (CPU time is in other processes)
                    base, rate = pool_baseline(images, args.size, draft, workers), loader_rate(url, tok, proc, cfg, n)
                    base_cpu = rate_cpu = float("nan")
                pairs.append((base, rate, rate / base, rate_cpu / base_cpu))
            base, rate, ratio, cpu_ratio = (statistics.median(p[i] for p in pairs) for i in range(4))
            lo, hi = min(p[2] for p in pairs), max(p[2] for p in pairs)
            print(f"{workers:>7} {base:>11.1f} {rate:>9.1f} {ratio:>6.2f} {cpu_ratio:>10.2f}   [{lo:.2f} .. {hi:.2f}]")
        norm_cfg = LoaderConfig(batch_size=args.batch_size, num_workers=0, decode_draft=draft)
        print("ratio = loader / baseline samples per second (target >= 0.9); 1 worker = in the main process "
              "(num_workers=0), baseline and loader alternating batch by batch; 2 workers = DataLoader worker "
              "processes vs a 2-process pool, alternating whole runs; cpu ratio (1 worker) uses CPU seconds of this "
              "process, less sensitive to other load on the machine")
        if probe.pixel_batcher is not None:
            print(f"Not in the loader's time: normalising the uint8 pixels (TrainBatch.normalized(), done on the model's "
                  f"device in the train step) costs {normalisation_ms(url, tok, proc, norm_cfg):.3f} ms/sample on this "
                  f"CPU; on a GPU it is one elementwise kernel over a batch.")
        print("Where the loader's time goes beyond the baseline's decode + resize (~3.3 ms/sample on the 2-core dev "
              "box, measured in place, between image decodes): packing each resized image into the uint8 batch "
              "~0.1 ms (half of it page faults on the fresh batch buffer), record JSON + parse + stored token ids "
              "~0.08 ms, collation ~0.07 ms, tar reading + shuffle ~0.05 ms. Samples are processed in stages per "
              "batch (parse the samples a batch needs, then decode them), which keeps each stage's code and data in "
              "cache between image decodes (~0.1 ms/sample less than sample by sample). Tokenising on the fly "
              "(--no-pretokenise) adds ~0.2 ms. With workers, each batch is made in shared memory (one storage per "
              "dtype), so handing it to the main process copies nothing.")


if __name__ == "__main__":
    main()
