"""Exact, chunked ranking metrics: retrieval recall@k, top-k accuracy, multiple-choice accuracy.

Every metric here is derived from one integer per query, its *rank*: the number of competitors
that are placed before the query's best positive (0 = the positive is first). From ranks,
``recall@k`` / ``top-k`` is simply the fraction of queries with ``rank < k``.

Semantics (the same as LAION's CLIP_benchmark ``zeroshot_retrieval`` and the official FG-CLIP
scripts, with one deterministic rule for exact ties):

* Retrieval: each text belongs to exactly one image (``text_to_image``), an image may own several
  texts (COCO: 5). Image-to-text is a hit at k when *any* of the image's texts is among the top k
  texts; text-to-image is a hit when the text's image is among the top k images. Every query is
  counted (nothing is dropped at a batch boundary): chunking only bounds memory.
* Ties (pessimistic): a competitor whose score *equals* the best positive's score is counted as
  ranked before it. So ``rank = #{competitors j : score_j >= best_positive_score}``. Positives never
  compete with each other. ``torch.topk``/``argsort`` order ties by implementation detail; this rule
  never rewards a degenerate model (a constant scorer gets recall 0, not 1) and only differs from
  them on exact float ties. The official FG-OVD script counts a tie for the maximum as correct;
  here it is wrong.
* NaN scores are rejected (a NaN compares false and would silently rank first).

Scores are computed block by block (``chunk_size`` query rows at a time, each row against the
whole gallery), so a 25k x 5k problem needs ``chunk_size x 25k`` floats at a time instead of the
full matrix, and no sort is needed: counting ``>=`` is exact and O(n) per query. Results are equal
to an unchunked full-matrix computation whenever the similarity values themselves are equal
(``fgclip_core.eval.metrics_reference`` is that reference; the tests and
``benchmarks/retrieval_metrics.py`` compare the two).

All returned metric values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
DEFAULT_CHUNK = 1024


@dataclass(frozen=True)
class RetrievalRanks:
    """Rank of the best positive for every image query (``i2t``) and every text query (``t2i``)."""

    i2t: torch.Tensor  # LongTensor [n_images]
    t2i: torch.Tensor  # LongTensor [n_texts]


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    if size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {size}")
    for start in range(0, n, size):
        yield start, min(start + size, n)


def validate_text_to_image(text_to_image: torch.Tensor, n_images: int) -> torch.Tensor:
    """Check that every text points at a valid image and every image owns at least one text."""
    t2i = torch.as_tensor(text_to_image, dtype=torch.long).flatten()
    if t2i.numel() == 0:
        raise ValueError("no texts to evaluate")
    if int(t2i.min()) < 0 or int(t2i.max()) >= n_images:
        raise ValueError(f"text_to_image has indices outside [0, {n_images})")
    owned = torch.bincount(t2i, minlength=n_images)
    if bool((owned == 0).any()):
        missing = torch.nonzero(owned == 0).flatten()[:5].tolist()
        raise ValueError(f"images without any text (first: {missing}); drop them before ranking")
    return t2i


def retrieval_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                    chunk_size: int = DEFAULT_CHUNK) -> RetrievalRanks:
    """Ranks for both directions from embeddings (similarity = dot product; normalise beforehand).

    Similarities are always computed as ``image_emb[rows] @ text_emb[cols].T`` (images on the left),
    so both directions see the same values.
    """
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"expected [I, D] and [T, D] embeddings, got {tuple(image_emb.shape)} and "
                         f"{tuple(text_emb.shape)}")
    n_images, n_texts = image_emb.shape[0], text_emb.shape[0]
    t2i = validate_text_to_image(text_to_image, n_images)
    if t2i.numel() != n_texts:
        raise ValueError(f"text_to_image has {t2i.numel()} entries for {n_texts} texts")
    _check_finite("image embeddings", image_emb)
    _check_finite("text embeddings", text_emb)

    i2t_ranks = torch.empty(n_images, dtype=torch.long)
    text_t = text_emb.T
    for a, b in _chunks(n_images, chunk_size):
        scores = image_emb[a:b] @ text_t  # [c, T]
        positive = t2i.unsqueeze(0) == torch.arange(a, b).unsqueeze(1)
        best = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
        i2t_ranks[a:b] = ((scores >= best) & ~positive).sum(dim=1)

    t2i_ranks = torch.empty(n_texts, dtype=torch.long)
    for a, b in _chunks(n_texts, chunk_size):
        scores = (image_emb @ text_emb[a:b].T).T  # [c, I], same operand order as above
        rows = torch.arange(b - a)
        best = scores[rows, t2i[a:b]].unsqueeze(1)
        # The positive itself satisfies >=; it is not a competitor.
        t2i_ranks[a:b] = (scores >= best).sum(dim=1) - 1
    return RetrievalRanks(i2t=i2t_ranks, t2i=t2i_ranks)


def recall_at_k(ranks: torch.Tensor, k: int) -> float:
    """Fraction of queries whose best positive has rank < k."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = ranks.numel()
    if n == 0:
        raise ValueError("no queries")
    return int((ranks < k).sum()) / n


def recall_curve(ranks: torch.Tensor, max_k: int) -> list[float]:
    """``[recall@1, ..., recall@max_k]`` (for plots)."""
    return [recall_at_k(ranks, k) for k in range(1, max_k + 1)]


def retrieval_metrics(ranks: RetrievalRanks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``{"i2t_R@1": ..., "i2t_R@5": ..., ..., "t2i_R@10": ...}``."""
    out: dict[str, float] = {}
    for direction, r in (("i2t", ranks.i2t), ("t2i", ranks.t2i)):
        for k in ks:
            out[f"{direction}_R@{k}"] = recall_at_k(r, k)
    return out


def classification_ranks(features: torch.Tensor, classifier: torch.Tensor, labels: torch.Tensor,
                         chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Rank of the true class for each sample: #other classes scoring >= the true class.

    ``features`` [N, D], ``classifier`` [C, D] (one row per class), ``labels`` [N] in [0, C).
    """
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    n, c = features.shape[0], classifier.shape[0]
    if labels.numel() != n:
        raise ValueError(f"{labels.numel()} labels for {n} samples")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= c):
        raise ValueError(f"labels outside [0, {c})")
    _check_finite("features", features)
    _check_finite("classifier", classifier)
    out = torch.empty(n, dtype=torch.long)
    for a, b in _chunks(n, chunk_size):
        scores = features[a:b] @ classifier.T
        true = scores[torch.arange(b - a), labels[a:b]].unsqueeze(1)
        out[a:b] = (scores >= true).sum(dim=1) - 1
    return out


def topk_accuracy(ranks: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": ..., "top5": ...}`` from classification ranks."""
    return {f"top{k}": recall_at_k(ranks, k) for k in ks}


def multiple_choice_ranks(positive: torch.Tensor, negatives: torch.Tensor,
                          negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Rank of the positive among its own negatives (FG-OVD).

    ``positive`` [N], ``negatives`` [N, M] padded, ``negative_mask`` [N, M] True where a negative
    exists (items may have fewer than M negatives; padding never competes).
    """
    if negatives.ndim != 2 or positive.shape != negatives.shape[:1]:
        raise ValueError(f"expected positive [N] and negatives [N, M], got {tuple(positive.shape)} "
                         f"and {tuple(negatives.shape)}")
    if negative_mask is None:
        negative_mask = torch.ones_like(negatives, dtype=torch.bool)
    _check_finite("positive scores", positive)
    _check_finite("negative scores", negatives.masked_fill(~negative_mask, 0.0))
    return ((negatives >= positive.unsqueeze(1)) & negative_mask).sum(dim=1)


def accuracy(ranks: torch.Tensor) -> float:
    """Fraction of items whose positive ranks first (strictly above every negative)."""
    return recall_at_k(ranks, 1)
