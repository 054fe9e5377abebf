"""Straightforward full-matrix reference for the retrieval ranks (tests and the benchmark only).

Builds the whole ``[I, T]`` similarity matrix, sorts every row with ``argsort`` and reads the
position of the first positive. Ties follow the same pessimistic rule as
``fgclip_core.eval.metrics`` by sorting twice with a stable sort: first positives after negatives,
then by score (descending), so equal scores keep negatives first. It compares exactly: it equals
``retrieval_ranks(..., tie_tol=0)`` on any data and the default ``tie_tol`` wherever no two scores
are closer than it without being equal. Memory is O(I x T) several times
over: use it to check the chunked version, not for evaluation.
"""

from __future__ import annotations

import torch

from fgclip_core.eval.metrics import RetrievalRanks


def _first_positive_position(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    by_kind = torch.argsort(positive.to(torch.int8), dim=1, stable=True)  # negatives first
    order = by_kind.gather(1, torch.argsort(scores.gather(1, by_kind), dim=1, descending=True, stable=True))
    sorted_positive = positive.gather(1, order)
    # Position of the first True in each row; positives never count against each other, and the
    # best positive is the first positive in this order.
    return sorted_positive.to(torch.int8).argmax(dim=1)


def reference_retrieval_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor,
                              text_to_image: torch.Tensor) -> RetrievalRanks:
    t2i = torch.as_tensor(text_to_image, dtype=torch.long)
    sim = image_emb @ text_emb.T  # [I, T]
    positive = t2i.unsqueeze(0) == torch.arange(image_emb.shape[0]).unsqueeze(1)
    i2t = _first_positive_position(sim, positive)
    t2i_ranks = _first_positive_position(sim.T.contiguous(), positive.T.contiguous())
    return RetrievalRanks(i2t=i2t.long(), t2i=t2i_ranks.long())
