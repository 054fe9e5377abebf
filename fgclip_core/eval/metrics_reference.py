"""Straightforward full-matrix reference for the retrieval ranks (tests and the benchmark only).

Builds the whole similarity matrix per direction (``image @ text.T`` for image queries, ``text @
image.T`` for text queries, the operand order the chunked version uses), sorts every row with
``argsort`` and reads the position of the first positive. Ties follow the same pessimistic rule as
``fgclip_core.eval.metrics`` at the same precision: the positives' scores are lowered by ``tie_tol``
first, then rows are sorted twice with a stable sort (positives after negatives, then by score,
descending), so a competitor within ``tie_tol`` of the best positive lands before it. Memory is
O(I x T) several times over: use it to check the chunked version, not for evaluation.
"""

from __future__ import annotations

import torch

from fgclip_core.eval.metrics import RetrievalRanks
from fgclip_core.eval.ties import DEFAULT_TIE_TOL


def _first_positive_position(scores: torch.Tensor, positive: torch.Tensor, tie_tol: float) -> torch.Tensor:
    scores = torch.where(positive, scores - tie_tol, scores)
    by_kind = torch.argsort(positive.to(torch.int8), dim=1, stable=True)  # negatives first
    order = by_kind.gather(1, torch.argsort(scores.gather(1, by_kind), dim=1, descending=True, stable=True))
    sorted_positive = positive.gather(1, order)
    # Position of the first True in each row; positives never count against each other, and the
    # best positive is the first positive in this order.
    return sorted_positive.to(torch.int8).argmax(dim=1)


def reference_retrieval_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                              tie_tol: float = DEFAULT_TIE_TOL) -> RetrievalRanks:
    t2i = torch.as_tensor(text_to_image, dtype=torch.long)
    positive = t2i.unsqueeze(0) == torch.arange(image_emb.shape[0]).unsqueeze(1)  # [I, T]
    i2t = _first_positive_position(image_emb @ text_emb.T, positive, tie_tol)
    t2i_ranks = _first_positive_position(text_emb @ image_emb.T, positive.T.contiguous(), tie_tol)
    return RetrievalRanks(i2t=i2t.long(), t2i=t2i_ranks.long())
