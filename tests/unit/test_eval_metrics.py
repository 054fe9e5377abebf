"""Metrics against hand-computed cases, and chunked == full-matrix reference exactly."""

from __future__ import annotations

import pytest
import torch

from fgclip_core.eval.metrics import (
    accuracy,
    classification_ranks,
    multiple_choice_ranks,
    recall_at_k,
    recall_curve,
    retrieval_metrics,
    retrieval_ranks,
    topk_accuracy,
)
from fgclip_core.eval.metrics_reference import reference_retrieval_ranks


def ranks_from_matrix(sim: list[list[float]], text_to_image: list[int], chunk_size: int = 1024):
    """image_emb = S, text_emb = I  =>  image_emb @ text_emb.T == S exactly."""
    s = torch.tensor(sim, dtype=torch.float32)
    return retrieval_ranks(s, torch.eye(s.shape[1]), torch.tensor(text_to_image), chunk_size=chunk_size)


def test_two_captions_per_image_and_a_tie_by_hand():
    # texts 0,1 belong to image 0; texts 2,3 to image 1.
    sim = [[0.9, 0.1, 0.5, 0.2],   # image 0: best positive 0.9 beats every negative -> rank 0
           [0.3, 0.8, 0.4, 0.8]]   # image 1: best positive 0.8 ties negative text 1 -> rank 1
    r = ranks_from_matrix(sim, [0, 0, 1, 1])
    assert r.i2t.tolist() == [0, 1]
    # text 0: [0.9, 0.3] -> 0; text 1: [0.1, 0.8] -> 1; text 2: [0.5, 0.4] -> 1; text 3: [0.2, 0.8] -> 0
    assert r.t2i.tolist() == [0, 1, 1, 0]
    m = retrieval_metrics(r, ks=(1, 5))
    assert m == {"i2t_R@1": 0.5, "i2t_R@5": 1.0, "t2i_R@1": 0.5, "t2i_R@5": 1.0}


def test_text_to_image_tie_counts_against_the_positive():
    # text 1 belongs to image 1 and scores 0.5 with both images -> rank 1
    r = ranks_from_matrix([[0.2, 0.5], [0.1, 0.5]], [0, 1])
    assert r.t2i.tolist() == [0, 1]


def test_five_captions_per_image_any_caption_in_top_k_is_a_hit():
    # 3 images x 5 captions. Image 0's best own caption (0.7) is beaten by 2 captions of image 1
    # and tied by 1 caption of image 2 -> 3 texts ahead: miss at 1, hit at 5 and 10.
    t2i = [i for i in range(3) for _ in range(5)]
    row0 = [0.1, 0.7, 0.2, 0.0, 0.3] + [0.9, 0.8, 0.0, 0.0, 0.0] + [0.7, 0.0, 0.0, 0.0, 0.0]
    row1 = [0.0] * 5 + [1.0, 0.0, 0.0, 0.0, 0.0] + [0.0] * 5
    row2 = [0.0] * 10 + [0.0, 0.0, 0.0, 0.0, 0.6]
    r = ranks_from_matrix([row0, row1, row2], t2i)
    assert r.i2t.tolist() == [3, 0, 0]
    m = retrieval_metrics(r)
    assert m["i2t_R@1"] == pytest.approx(2 / 3)
    assert m["i2t_R@5"] == 1.0 and m["i2t_R@10"] == 1.0
    # Texts of image 0: column values (img0, img1, img2); ranks by hand.
    assert r.t2i[:5].tolist() == [0, 0, 0, 2, 0]  # text 3: 0.0 ties both others -> 2


def test_constant_scorer_gets_zero_recall_at_one():
    r = ranks_from_matrix([[0.0] * 6 for _ in range(3)], [0, 0, 1, 1, 2, 2])
    assert r.i2t.tolist() == [4, 4, 4]
    assert r.t2i.tolist() == [2] * 6
    assert retrieval_metrics(r, ks=(1,))["t2i_R@1"] == 0.0


def test_perfect_scorer_gets_full_recall():
    t2i = torch.arange(7).repeat_interleave(5)
    img = torch.eye(7)
    txt = torch.eye(7)[t2i]
    m = retrieval_metrics(retrieval_ranks(img, txt, t2i, chunk_size=4))
    assert all(v == 1.0 for v in m.values())


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 10_000])
def test_chunked_equals_full_matrix_reference_exactly_with_many_ties(chunk_size):
    # Quarter-integer embeddings: every dot product is exact in float32 whatever the summation
    # order, so ties are real ties and both implementations see the same numbers.
    g = torch.Generator().manual_seed(0)
    n_images, per_image, d = 23, 5, 8
    img = torch.randint(-2, 3, (n_images, d), generator=g).float() / 4
    txt = torch.randint(-2, 3, (n_images * per_image, d), generator=g).float() / 4
    t2i = torch.arange(n_images).repeat_interleave(per_image)
    perm = torch.randperm(t2i.numel(), generator=g)  # texts not grouped by image
    txt, t2i = txt[perm], t2i[perm]
    got = retrieval_ranks(img, txt, t2i, chunk_size=chunk_size)
    ref = reference_retrieval_ranks(img, txt, t2i)
    assert torch.equal(got.i2t, ref.i2t)
    assert torch.equal(got.t2i, ref.t2i)
    assert got.t2i.numel() == n_images * per_image  # no dropped last chunk


def test_chunked_equals_reference_on_random_normalised_embeddings():
    g = torch.Generator().manual_seed(1)
    img = torch.nn.functional.normalize(torch.randn(50, 32, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(250, 32, generator=g), dim=-1)
    t2i = torch.arange(50).repeat_interleave(5)
    got = retrieval_ranks(img, txt, t2i, chunk_size=17)
    ref = reference_retrieval_ranks(img, txt, t2i)
    assert torch.equal(got.i2t, ref.i2t) and torch.equal(got.t2i, ref.t2i)


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="without any text"):
        ranks_from_matrix([[1.0], [0.0]], [0])
    with pytest.raises(ValueError, match="outside"):
        ranks_from_matrix([[1.0]], [3])
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_matrix([[float("nan")]], [0])
    with pytest.raises(ValueError, match="chunk_size"):
        ranks_from_matrix([[1.0]], [0], chunk_size=0)


def test_multiple_choice_with_fewer_negatives_and_ties():
    pos = torch.tensor([0.5, 0.5, 0.9])
    neg = torch.tensor([[0.4, 0.6, 0.0],
                        [0.5, 0.1, 0.2],
                        [0.1, 99.0, 99.0]])  # item 2 has one negative; padding never competes
    mask = torch.tensor([[True, True, False], [True, True, True], [True, False, False]])
    r = multiple_choice_ranks(pos, neg, mask)
    assert r.tolist() == [1, 1, 0]
    assert accuracy(r) == pytest.approx(1 / 3)


def test_classification_topk_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.0, 0.0, 0.0, 0.0],
                           [0.5, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0],
                           [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]])
    labels = torch.tensor([1, 0, 6])
    r = classification_ranks(scores, torch.eye(7), labels, chunk_size=2)
    assert r.tolist() == [0, 1, 6]
    assert topk_accuracy(r) == {"top1": pytest.approx(1 / 3), "top5": pytest.approx(2 / 3)}


def test_recall_curve_is_monotone_and_ends_at_one():
    ranks = torch.tensor([0, 2, 4, 1])
    assert recall_curve(ranks, 5) == [0.25, 0.5, 0.75, 0.75, 1.0]
    with pytest.raises(ValueError):
        recall_at_k(ranks, 0)


def test_reference_and_chunked_agree_on_near_ties_at_the_stated_precision():
    from fgclip_core.eval.metrics import DEFAULT_TIE_TOL

    sim = [[0.5, 0.5 - DEFAULT_TIE_TOL / 4, 0.5 - 8 * DEFAULT_TIE_TOL],
           [0.3, 0.3 + DEFAULT_TIE_TOL / 4, 0.1]]
    s = torch.tensor(sim)
    for tol, i2t in ((DEFAULT_TIE_TOL, [1, 1]), (0.0, [0, 0])):
        got = retrieval_ranks(s, torch.eye(3), torch.tensor([0, 1, 1]), chunk_size=1, tie_tol=tol)
        ref = reference_retrieval_ranks(s, torch.eye(3), torch.tensor([0, 1, 1]), tie_tol=tol)
        assert got.i2t.tolist() == ref.i2t.tolist() == i2t
        assert torch.equal(got.t2i, ref.t2i)
