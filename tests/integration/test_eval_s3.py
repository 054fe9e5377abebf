"""Benchmarks and images read straight from S3 (loopback moto server)."""

from __future__ import annotations

import json

import pytest
import torch

from fgclip_core.eval import sample_benchmarks as L
from fgclip_core.eval.cache import EmbeddingCache
from fgclip_core.eval.config import BenchmarkSpec, EvalSettings
from fgclip_core.eval.datasets import detect_format, read_benchmark
from fgclip_core.eval.encoder import CachedEncoder
from fgclip_core.eval.runner import run_benchmark
from fgclip_core.storage import filesystem

pytestmark = pytest.mark.integration


class SizeEncoder:
    """Embeds an image by its size: enough to prove the pixels came through S3."""

    fingerprint = "size"

    def __init__(self):
        self.sizes = []

    def encode_images(self, images):
        self.sizes += [im.size for im in images]
        return torch.tensor([[float(im.size[0]), float(im.size[1]), 1.0] for im in images])

    def encode_texts(self, texts, mode):
        return torch.tensor([[float(len(t)), 1.0, 0.0] for t in texts])

    def encode_regions(self, images, boxes):
        return [torch.ones(len(b), 3) for b in boxes]


def test_fgovd_and_dci_from_s3(moto_s3, sample_set, tmp_path):
    local = tmp_path / "bench"
    local.mkdir()
    rows = L.write_fgovd(sample_set, local / "fgovd.jsonl")
    with open(local / "fgovd.jsonl", "a") as f:
        f.write(json.dumps(dict(rows[0], img_path="ghost.jpg")) + "\n")
    L.write_dci(sample_set, local / "annotations")
    prefix = moto_s3.new_prefix("eval")
    fs, root = filesystem(prefix)
    fs.put(str(local / "fgovd.jsonl"), f"{root}/fgovd.jsonl")
    fs.put(str(local / "annotations"), f"{root}/annotations", recursive=True)
    fs.put(str(sample_set.images_root), f"{root}/images", recursive=True)

    images = f"{prefix}/images"
    assert detect_format("long-retrieval", f"{prefix}/annotations") == "dci"
    dci = read_benchmark(BenchmarkSpec(suite="long-retrieval", data=f"{prefix}/annotations", images=images))
    assert len(dci.images) == len(sample_set.records) and dci.images[0].startswith("s3://")

    enc = SizeEncoder()
    settings = EvalSettings(progress=False)
    res = run_benchmark(BenchmarkSpec(suite="long-retrieval", data=f"{prefix}/annotations", images=images),
                        CachedEncoder(enc, EmbeddingCache(tmp_path / "cache", enc.fingerprint)), settings)
    assert not res.missing_images and res.n == len(sample_set.records)
    assert sorted(enc.sizes) == sorted((r.width, r.height) for r in sample_set.records)

    fg = run_benchmark(BenchmarkSpec(suite="fgovd", data=f"{prefix}/fgovd.jsonl", images=images),
                       CachedEncoder(enc, EmbeddingCache(None, enc.fingerprint)), settings)
    assert fg.n == len(rows)
    assert fg.missing_images == [f"{images}/ghost.jpg"]  # counted, not fatal
