"""The tie rule decides the same way on every CPU (issue 14, section 1).

MKL's AVX-512 kernels do not give equal floats for equal inputs at different positions of one
GEMM. Rather than hope for the right CPU, the ``position_dependent_products`` fixture makes every
matrix product (``@``, ``torch.matmul``, ``torch.einsum``) behave like the worst such kernel: the
result in column ``j`` is lowered by ``j + 1`` ulps, so equal inputs at different positions score
differently on any machine. The rule must still see equal inputs as ties. The old rule (one GEMM
for the whole gallery, FG-OVD positives by ``(a * b).sum`` and negatives by ``einsum``, exact
``>=``) fails these tests on every CPU. ``make test-ties`` runs this file under each
``MKL_ENABLE_INSTRUCTIONS`` / ``ATEN_CPU_CAPABILITY`` choice as well.
"""

from __future__ import annotations

import pytest
import torch

from fgclip_core.eval import sample_benchmarks as L
from fgclip_core.eval.cache import EmbeddingCache
from fgclip_core.eval.config import BenchmarkSpec, EvalSettings
from fgclip_core.eval.encoder import CachedEncoder
from fgclip_core.eval.metrics import (
    DEFAULT_TIE_TOL,
    classification_ranks,
    multiple_choice_ranks,
    multiple_choice_scores,
    retrieval_ranks,
)
from fgclip_core.eval.runner import run_benchmark

TOLS = [0.0, DEFAULT_TIE_TOL]  # tol 0: the equal-inputs-share-one-score half of the rule alone


def _lower_by_position(out: torch.Tensor) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.ndim < 1:
        return out
    col = torch.arange(out.shape[-1])
    down = torch.full_like(out, float("-inf"))
    for k in range(out.shape[-1]):
        out = torch.where(col >= k, torch.nextafter(out, down), out)
    return out


def _nudged(fn):
    def product(*args, **kwargs):
        return _lower_by_position(fn(*args, **kwargs))
    return product


@pytest.fixture
def position_dependent_products(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "__matmul__", _nudged(torch.Tensor.__matmul__))
    monkeypatch.setattr(torch, "matmul", _nudged(torch.matmul))
    monkeypatch.setattr(torch, "einsum", _nudged(torch.einsum))
    x = torch.ones(2, 8) / 8 ** 0.5
    s = x @ x.T
    assert s[0, 0] > s[0, 1]  # equal inputs, different positions, different scores
    assert torch.einsum("nd,nmd->nm", x, x.unsqueeze(1).expand(2, 3, 8))[0].unique().numel() == 3


def unit_ones(n: int, d: int = 8) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.ones(n, d), dim=-1)


@pytest.mark.parametrize("tol", TOLS)
def test_constant_retrieval_ranks_every_positive_last(position_dependent_products, tol):
    n_images, per_image = 13, 5
    t2i = torch.arange(n_images).repeat_interleave(per_image)
    r = retrieval_ranks(unit_ones(n_images), unit_ones(n_images * per_image), t2i, chunk_size=4, tie_tol=tol)
    assert r.i2t.tolist() == [(n_images - 1) * per_image] * n_images
    assert r.t2i.tolist() == [n_images - 1] * (n_images * per_image)
    opt = retrieval_ranks(unit_ones(n_images), unit_ones(n_images * per_image), t2i, ties="optimistic", tie_tol=tol)
    assert opt.i2t.tolist() == [0] * n_images and opt.t2i.tolist() == [0] * (n_images * per_image)


@pytest.mark.parametrize("tol", TOLS)
def test_constant_retrieval_on_this_cpus_own_kernels(tol):
    """No patching: a gallery wide enough for every vector width and tail path of the real GEMM."""
    n_images, per_image, d = 97, 3, 512
    t2i = torch.arange(n_images).repeat_interleave(per_image)
    r = retrieval_ranks(unit_ones(n_images, d), unit_ones(n_images * per_image, d), t2i, chunk_size=40, tie_tol=tol)
    assert set(r.i2t.tolist()) == {(n_images - 1) * per_image} and set(r.t2i.tolist()) == {n_images - 1}


@pytest.mark.parametrize("tol", TOLS)
def test_duplicate_classes_tie_whatever_their_position(position_dependent_products, tol):
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=-1)
    classifier = base[[0, 1, 2, 3, 1, 1]]  # classes 1, 4, 5 have the same embedding
    features = base[[1, 1, 1]] * 0.9 + base[[2, 2, 2]] * 0.1
    labels = torch.tensor([1, 4, 5])
    assert classification_ranks(features, classifier, labels, chunk_size=2, tie_tol=tol).tolist() == [2, 2, 2]
    assert classification_ranks(features, classifier, labels, ties="optimistic", tie_tol=tol).tolist() == [0, 0, 0]


@pytest.mark.parametrize("tol", TOLS)
def test_identical_text_scores_equal_as_positive_and_negative(position_dependent_products, tol):
    g = torch.Generator().manual_seed(1)
    texts = torch.nn.functional.normalize(torch.randn(5, 16, generator=g), dim=-1)
    texts = torch.cat([texts, texts[:1]])  # row 5 is another copy of row 0 (two strings, one embedding)
    regions = torch.nn.functional.normalize(texts[[0, 0, 2]] + 0.3 * texts[[1, 3, 4]], dim=-1)
    # column 0 positive; item 0: one negative equal to the positive (as row 0 and as row 5)
    choice = torch.tensor([[0, 1, 5, 0], [0, 3, 4, 4], [2, 1, 0, 0]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False], [True, True, True, False]])
    s = multiple_choice_scores(regions, texts, choice, mask)
    assert s[0, 0] == s[0, 2] == s[0, 3]  # bit-equal, whatever the position
    pess = multiple_choice_ranks(s[:, 0], s[:, 1:], mask[:, 1:], tie_tol=tol)
    opt = multiple_choice_ranks(s[:, 0], s[:, 1:], mask[:, 1:], ties="optimistic", tie_tol=tol)
    assert pess[0] == 2 and opt[0] == 0
    assert torch.equal(pess[1:], opt[1:])  # no ties there: both rules agree


def test_scores_within_the_stated_precision_tie():
    """Inputs equal up to rounding (distinct floats): ties at the stated precision, not before."""
    pos = torch.tensor([0.5, 0.5, 0.5])
    one_ulp_above = torch.nextafter(pos[0], torch.tensor(1.0))
    # item 0: a negative 1 ulp above, item 1: half the tolerance below, item 2: 4 tolerances below
    neg = torch.stack([one_ulp_above, pos[1] - DEFAULT_TIE_TOL / 2, pos[2] - 4 * DEFAULT_TIE_TOL]).unsqueeze(1)
    assert multiple_choice_ranks(pos, neg).tolist() == [1, 1, 0]
    assert multiple_choice_ranks(pos, neg, ties="optimistic").tolist() == [0, 0, 0]
    assert multiple_choice_ranks(pos, neg, tie_tol=0.0).tolist() == [1, 0, 0]  # exact comparison
    above = pos.unsqueeze(1) + 4 * DEFAULT_TIE_TOL
    assert multiple_choice_ranks(pos, above, ties="optimistic").tolist() == [1, 1, 1]


def test_bad_tie_rule_is_rejected():
    with pytest.raises(ValueError, match="ties must be"):
        multiple_choice_ranks(torch.zeros(1), torch.zeros(1, 1), ties="coin")
    with pytest.raises(ValueError, match="tie_tol"):
        retrieval_ranks(torch.eye(2), torch.eye(2), torch.tensor([0, 1]), tie_tol=-1.0)


class Constant:
    fingerprint = "constant"

    def encode_images(self, images):
        return torch.ones(len(images), 8)

    def encode_texts(self, texts, mode):
        return torch.ones(len(texts), 8)

    def encode_regions(self, images, boxes):
        return [torch.ones(len(b), 8) for b in boxes]


def cached(tmp_path) -> CachedEncoder:
    return CachedEncoder(Constant(), EmbeddingCache(tmp_path / "cache", "constant"), batch_size=4, progress=False)


@pytest.mark.parametrize("tol", TOLS)
def test_suites_with_a_constant_encoder_on_a_position_dependent_cpu(sample_set, tmp_path, position_dependent_products,
                                                                     tol):
    settings = EvalSettings(progress=False, batch_size=4, chunk_size=3, tie_tol=tol)
    kp = tmp_path / "dataset_flickr30k.json"
    L.write_karpathy(sample_set, kp, n_test=13)
    res = run_benchmark(BenchmarkSpec(suite="short-retrieval", data=str(kp), images=str(sample_set.images_root)),
                        cached(tmp_path), settings)
    assert res.metrics["i2t_R@10"] == 0.0 and res.metrics["t2i_R@10"] == 0.0
    fg = tmp_path / "fgovd.jsonl"
    L.write_fgovd(sample_set, fg)
    for ties, expected in (("pessimistic", 0.0), ("optimistic", 1.0)):
        spec = BenchmarkSpec(suite="fgovd", data=str(fg), images=str(sample_set.images_root), ties=ties)
        assert run_benchmark(spec, cached(tmp_path), settings).metrics["accuracy"] == expected
