"""Exact, chunked ranking metrics: retrieval recall@k, top-k accuracy, multiple-choice accuracy.

Every metric here is derived from one integer per query, its *rank*: the number of competitors
that are placed before the query's best positive (0 = the positive is first). From ranks,
``recall@k`` / ``top-k`` is simply the fraction of queries with ``rank < k``.

Semantics (the same as LAION's CLIP_benchmark ``zeroshot_retrieval`` and the official FG-CLIP
scripts, with one deterministic rule for ties):

* Retrieval: each text belongs to exactly one image (``text_to_image``), an image may own several
  texts (COCO: 5). Image-to-text is a hit at k when *any* of the image's texts is among the top k
  texts; text-to-image is a hit when the text's image is among the top k images. Every query is
  counted (nothing is dropped at a batch boundary): chunking only bounds memory.
* Scores (the tie rule's first half, the same on every CPU): a query's scores against its
  positive(s) and its competitors are computed by one operation, and candidates whose embeddings
  are equal share *one* computed score (the candidate side is reduced to its distinct rows before
  the product, then gathered back). So equal inputs give bit-equal scores whatever their position
  in the matrix and whichever GEMM kernel the BLAS picks (MKL's AVX-512 kernels do not give equal
  floats for equal columns at different positions; nothing here relies on them doing so).
* Ties (the second half): two scores tie when they differ by at most ``tie_tol`` (absolute,
  :data:`DEFAULT_TIE_TOL` = 1e-6 on cosine similarities in [-1, 1]; it absorbs float32 rounding of
  inputs that are equal up to encoder rounding, e.g. two strings with the same tokens). With
  ``ties="pessimistic"`` (the default) a tied competitor counts as ranked before the positive:
  ``rank = #{competitors j : s_j >= best - tie_tol}``; a constant scorer gets recall 0, not 1.
  With ``ties="optimistic"`` (the official FG-OVD script: a tie for first is correct) it counts
  after: ``rank = #{j : s_j > best + tie_tol}``. Positives never compete with each other.
  ``torch.topk``/``argsort`` order ties by implementation detail; the results differ from them
  only on ties.
* NaN scores are rejected (a NaN compares false and would silently rank first).

Scores are computed block by block (``chunk_size`` query rows at a time, each row against the
whole gallery), so a 25k x 5k problem needs ``chunk_size x 25k`` floats at a time instead of the
full matrix, and no sort is needed: counting is exact and O(n) per query. Results are equal
to an unchunked full-matrix computation whenever the similarity values themselves are equal
(``fgclip_core.eval.metrics_reference`` is that reference; the tests and
``benchmarks/retrieval_metrics.py`` compare the two).

All returned metric values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from fgclip_core.eval.ties import DEFAULT_TIE_TOL, TIE_RULES, TieRule

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
DEFAULT_CHUNK = 1024
_PAIR_CHUNK = 65536  # (query, candidate) pairs scored at a time by multiple_choice_scores


@dataclass(frozen=True)
class RetrievalRanks:
    """Rank of the best positive for every image query (``i2t``) and every text query (``t2i``)."""

    i2t: torch.Tensor  # LongTensor [n_images]
    t2i: torch.Tensor  # LongTensor [n_texts]


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_tie_rule(ties: str, tie_tol: float) -> None:
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    if not tie_tol >= 0.0:  # also rejects NaN
        raise ValueError(f"tie_tol must be >= 0, got {tie_tol}")


def _chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    if size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {size}")
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _similarity(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``[Q, C]`` dot products. The only GEMM here: tests replace it with one whose result depends on
    the position in the matrix (as MKL's kernels may), and every decision must stay the same."""
    return queries @ candidates.T


def distinct_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(rows, index)`` with ``x == rows[index]``: equal rows of ``x`` map to one row, so a score
    computed against ``rows`` is one float per distinct candidate. ``index`` is ``None`` (and
    ``rows`` is ``x``) when every row is distinct already: then no two candidates are equal."""
    unique, index = torch.unique(x, dim=0, return_inverse=True)
    if unique.shape[0] == x.shape[0]:
        return x, None
    return unique, index


def _gallery_scores(queries: torch.Tensor, rows: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Scores of ``queries`` against every gallery item; equal gallery items get the same float."""
    scores = _similarity(queries, rows)
    return scores if index is None else scores[:, index]


def _count_ahead(scores: torch.Tensor, best: torch.Tensor, competitors: torch.Tensor | None,
                 ties: TieRule, tie_tol: float) -> torch.Tensor:
    """Per row, the number of competitors placed before ``best`` ([rows, 1]) under the tie rule.
    ``competitors`` masks who competes (``None``: everyone)."""
    ahead = scores >= best - tie_tol if ties == "pessimistic" else scores > best + tie_tol
    if competitors is not None:
        ahead &= competitors
    return ahead.sum(dim=1)


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
                    chunk_size: int = DEFAULT_CHUNK, ties: TieRule = "pessimistic",
                    tie_tol: float = DEFAULT_TIE_TOL) -> RetrievalRanks:
    """Ranks for both directions from embeddings (similarity = dot product; normalise beforehand).

    Each query row is scored against the distinct rows of the other side (see the module doc), so
    equal gallery embeddings always tie exactly.
    """
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"expected [I, D] and [T, D] embeddings, got {tuple(image_emb.shape)} and "
                         f"{tuple(text_emb.shape)}")
    _check_tie_rule(ties, tie_tol)
    n_images, n_texts = image_emb.shape[0], text_emb.shape[0]
    t2i = validate_text_to_image(text_to_image, n_images)
    if t2i.numel() != n_texts:
        raise ValueError(f"text_to_image has {t2i.numel()} entries for {n_texts} texts")
    _check_finite("image embeddings", image_emb)
    _check_finite("text embeddings", text_emb)

    i2t_ranks = torch.empty(n_images, dtype=torch.long)
    texts_u, texts_idx = distinct_rows(text_emb)
    for a, b in _chunks(n_images, chunk_size):
        scores = _gallery_scores(image_emb[a:b], texts_u, texts_idx)  # [c, T]
        positive = t2i.unsqueeze(0) == torch.arange(a, b).unsqueeze(1)
        best = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
        i2t_ranks[a:b] = _count_ahead(scores, best, ~positive, ties, tie_tol)

    t2i_ranks = torch.empty(n_texts, dtype=torch.long)
    images_u, images_idx = distinct_rows(image_emb)
    for a, b in _chunks(n_texts, chunk_size):
        scores = _gallery_scores(text_emb[a:b], images_u, images_idx)  # [c, I]
        rows = torch.arange(b - a)
        best = scores[rows, t2i[a:b]].unsqueeze(1)
        positive = torch.zeros_like(scores, dtype=torch.bool)
        positive[rows, t2i[a:b]] = True
        t2i_ranks[a:b] = _count_ahead(scores, best, ~positive, ties, tie_tol)
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
                         chunk_size: int = DEFAULT_CHUNK, ties: TieRule = "pessimistic",
                         tie_tol: float = DEFAULT_TIE_TOL) -> torch.Tensor:
    """Rank of the true class for each sample: #other classes placed before it by the tie rule.

    ``features`` [N, D], ``classifier`` [C, D] (one row per class), ``labels`` [N] in [0, C).
    """
    _check_tie_rule(ties, tie_tol)
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    n, c = features.shape[0], classifier.shape[0]
    if labels.numel() != n:
        raise ValueError(f"{labels.numel()} labels for {n} samples")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= c):
        raise ValueError(f"labels outside [0, {c})")
    _check_finite("features", features)
    _check_finite("classifier", classifier)
    out = torch.empty(n, dtype=torch.long)
    classes_u, classes_idx = distinct_rows(classifier)
    for a, b in _chunks(n, chunk_size):
        scores = _gallery_scores(features[a:b], classes_u, classes_idx)
        rows = torch.arange(b - a)
        true = scores[rows, labels[a:b]].unsqueeze(1)
        other = torch.ones_like(scores, dtype=torch.bool)
        other[rows, labels[a:b]] = False
        out[a:b] = _count_ahead(scores, true, other, ties, tie_tol)
    return out


def topk_accuracy(ranks: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": ..., "top5": ...}`` from classification ranks."""
    return {f"top{k}": recall_at_k(ranks, k) for k in ks}


def multiple_choice_scores(queries: torch.Tensor, candidates: torch.Tensor, choice_index: torch.Tensor,
                           choice_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[N, K]`` scores of query ``n`` against ``candidates[choice_index[n, k]]`` (FG-OVD: column 0
    the positive, then the negatives), all by one operation; each distinct (query, candidate
    embedding) pair is computed once, so an identical text scores bit-equal as positive and as
    negative. Masked-out choices (padding) score 0 and are never computed."""
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"expected [N, D] queries and [T, D] candidates, got {tuple(queries.shape)} "
                         f"and {tuple(candidates.shape)}")
    choice_index = torch.as_tensor(choice_index, dtype=torch.long)
    if choice_index.ndim != 2 or choice_index.shape[0] != queries.shape[0]:
        raise ValueError(f"choice_index must be [N, K] for N={queries.shape[0]}, got {tuple(choice_index.shape)}")
    mask = torch.ones_like(choice_index, dtype=torch.bool) if choice_mask is None else choice_mask.bool()
    if candidates.shape[0] == 0 or not bool(mask.any()):
        return torch.zeros(choice_index.shape, dtype=queries.dtype)
    picked = choice_index[mask]
    if int(picked.min()) < 0 or int(picked.max()) >= candidates.shape[0]:
        raise ValueError(f"choice_index has indices outside [0, {candidates.shape[0]})")
    _check_finite("queries", queries)
    _check_finite("candidates", candidates)
    unique, index = distinct_rows(candidates)
    rows = torch.arange(queries.shape[0]).unsqueeze(1).expand_as(choice_index)[mask]
    keys = rows * unique.shape[0] + (picked if index is None else index[picked])
    pairs, pair_of = torch.unique(keys, return_inverse=True)
    pair_scores = torch.empty(pairs.numel(), dtype=queries.dtype)
    for a, b in _chunks(pairs.numel(), _PAIR_CHUNK):
        q, c = pairs[a:b] // unique.shape[0], pairs[a:b] % unique.shape[0]
        pair_scores[a:b] = (queries[q] * unique[c]).sum(-1)
    out = torch.zeros(choice_index.shape, dtype=queries.dtype)
    out[mask] = pair_scores[pair_of]
    return out


def multiple_choice_ranks(positive: torch.Tensor, negatives: torch.Tensor,
                          negative_mask: torch.Tensor | None = None, ties: TieRule = "pessimistic",
                          tie_tol: float = DEFAULT_TIE_TOL) -> torch.Tensor:
    """Rank of the positive among its own negatives (FG-OVD).

    ``positive`` [N], ``negatives`` [N, M] padded, ``negative_mask`` [N, M] True where a negative
    exists (items may have fewer than M negatives; padding never competes). Compute both with
    :func:`multiple_choice_scores` so that equal texts score equal.
    """
    if negatives.ndim != 2 or positive.shape != negatives.shape[:1]:
        raise ValueError(f"expected positive [N] and negatives [N, M], got {tuple(positive.shape)} "
                         f"and {tuple(negatives.shape)}")
    _check_tie_rule(ties, tie_tol)
    if negative_mask is None:
        negative_mask = torch.ones_like(negatives, dtype=torch.bool)
    _check_finite("positive scores", positive)
    _check_finite("negative scores", negatives.masked_fill(~negative_mask, 0.0))
    return _count_ahead(negatives, positive.unsqueeze(1), negative_mask, ties, tie_tol)


def accuracy(ranks: torch.Tensor) -> float:
    """Fraction of items whose positive ranks first (no negative placed before it by the tie rule)."""
    return recall_at_k(ranks, 1)
