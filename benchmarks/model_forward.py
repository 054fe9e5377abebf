"""CPU encoding throughput of FGCLIPModel next to transformers.CLIPModel on the same weights.

Prints, per architecture, images/s and texts/s (per CPU-second by default: robust when other
processes share the machine; ``--clock wall`` for elapsed time). Text cases: ``full`` fills every
position with real tokens (the worst case); ``captions`` are tokenised captions padded to 77 / 248
as the loader and evaluation feed them (FGCLIPModel skips the padding after the last EOS, which
cannot change any pooled feature; transformers computes it). (short: 77 tokens; long: 248 tokens) for both and
the ratio ours / transformers (target >= 1.0). The long-text baseline is a transformers CLIPModel
whose 248-row position table is FG-CLIP's combined long table (same computation).

    .venv/bin/python benchmarks/model_forward.py [--archs tiny ViT-B-16] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import random
import tempfile
import time
from collections.abc import Callable

import torch
from transformers import CLIPConfig, CLIPModel

from fgclip_core.model import FGCLIPModel, build_clip_tokenizer, load_arch, load_tokenizer
from fgclip_core.model.build import random_model


def hf_twin(model: FGCLIPModel, long_text: bool) -> CLIPModel:
    """A transformers CLIPModel carrying ``model``'s weights (long: 248 positions, filip projection)."""
    cfg = CLIPConfig(**model.config.to_hf_dict(long_text=long_text))
    cfg._attn_implementation = "sdpa"
    hf = CLIPModel(cfg).eval()
    sd = {k: v for k, v in model.state_dict().items() if k in hf.state_dict()}
    if long_text:
        emb = model.text_model.embeddings
        sd["text_model.embeddings.position_embedding.weight"] = emb.positions(emb.cfg.long_max_position_embeddings, True)
        sd["text_projection.weight"] = model.text_filip_projection.weight
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"weights do not transfer: missing {missing}, unexpected {unexpected}")
    return hf


WORDS = ["a", "photo", "of", "the", "red", "car", "parked", "next", "to", "an", "old", "brick", "building", "with", "two", "windows", "and", "a", "small", "white", "dog", "sitting", "on", "wooden", "bench", "under", "tall", "green", "tree", "while", "people", "walk", "along", "street"]


@functools.cache
def _tokenizer():
    tmp = tempfile.mkdtemp(prefix="fgclip-bench-tok-")
    build_clip_tokenizer(tmp)
    return load_tokenizer(tmp)


def caption_ids(n: int, mode: str) -> torch.Tensor:
    """Tokenised captions padded to the full length, as the data loader and evaluation produce them
    (short: 5-20 words, long: 20-120 words)."""
    rng = random.Random(0)
    lo, hi = (5, 20) if mode == "short" else (20, 120)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]
    return _tokenizer().encode(texts, mode)


def as_tensor(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def paired_rates(ours: Callable[[], torch.Tensor], theirs: Callable[[], torch.Tensor], items: int,
                 repeats: int, clock: Callable[[], float] = time.process_time) -> tuple[float, float, float]:
    """Best-of-``repeats`` items/s for both, timed alternately (so that load from other processes
    hits both alike) after one warm-up call each; also the max abs difference of their outputs."""
    best = [float("inf"), float("inf")]
    with torch.inference_mode():
        diff = (ours() - theirs()).abs().max().item()
        for _ in range(repeats):
            for i, fn in enumerate((ours, theirs)):
                t0 = clock()
                fn()
                best[i] = min(best[i], clock() - t0)
    return items / best[0], items / best[1], diff


def bench(arch: str, repeats: int, batch_images: int, batch_texts: int,
          clock: Callable[[], float]) -> list[tuple[str, float, float, float]]:
    model = random_model(load_arch(arch), seed=0).eval()
    hf_short, hf_long = hf_twin(model, False), hf_twin(model, True)
    s = model.config.vision_config.image_size
    t = model.config.text_config
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch_images, 3, s, s, generator=g)

    def ids(length: int) -> torch.Tensor:
        x = torch.randint(1, 49000, (batch_texts, length), generator=g)
        x[:, 0], x[:, -1] = t.bos_token_id, t.eos_token_id
        return x

    short_ids, long_ids = ids(t.max_position_embeddings), ids(t.long_max_position_embeddings)
    short_caps, long_caps = caption_ids(batch_texts, "short"), caption_ids(batch_texts, "long")
    cases = [
        ("image", batch_images, lambda: model.get_image_features(pixels),
         lambda: as_tensor(hf_short.get_image_features(pixel_values=pixels))),
        ("text-short full", batch_texts, lambda: model.get_text_features(short_ids, True),
         lambda: as_tensor(hf_short.get_text_features(input_ids=short_ids))),
        ("text-long full", batch_texts, lambda: model.get_text_features(long_ids, False),
         lambda: as_tensor(hf_long.get_text_features(input_ids=long_ids))),
        ("text-short captions", batch_texts, lambda: model.get_text_features(short_caps, True),
         lambda: as_tensor(hf_short.get_text_features(input_ids=short_caps))),
        ("text-long captions", batch_texts, lambda: model.get_text_features(long_caps, False),
         lambda: as_tensor(hf_long.get_text_features(input_ids=long_caps))),
    ]
    rows = []
    for name, n, ours, theirs in cases:
        r_ours, r_hf, diff = paired_rates(ours, theirs, n, repeats, clock)
        rows.append((f"{arch} {name}", r_ours, r_hf, diff))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["tiny", "ViT-B-16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-images", type=int, default=8)
    ap.add_argument("--batch-texts", type=int, default=16)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="cpu: process CPU time (robust on a shared machine); wall: elapsed time")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    print(f"torch {torch.__version__}, {a.threads} threads, best of {a.repeats}, float32, CPU, {a.clock} clock")
    print(f"{'case':<30}{'ours/s':>10}{'transformers/s':>16}{'ratio':>8}{'max|diff|':>12}")
    for arch in a.archs:
        for name, ours, hf, diff in bench(arch, a.repeats, a.batch_images, a.batch_texts, clock):
            print(f"{name:<30}{ours:>10.1f}{hf:>16.1f}{ours / hf:>8.2f}{diff:>12.2e}")


if __name__ == "__main__":
    main()
