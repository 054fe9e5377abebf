"""The fused, trimmed step equals the official-shape step: same losses, same gradients."""

from __future__ import annotations

import pytest
import torch

from fgclip_core.losses import LossConfig
from fgclip_core.model import FGCLIPModel, load_arch
from fgclip_core.train.step import (
    FGCLIPTrainModule,
    encode_short_texts,
    length_buckets,
    real_lengths,
    trim_ids,
)
from fgclip_core.train.synthetic import SyntheticBatches, TextSpec

torch.set_num_threads(1)


@pytest.fixture()
def model() -> FGCLIPModel:
    torch.manual_seed(0)
    return FGCLIPModel(load_arch("tiny"))


def _batches(model: FGCLIPModel, samples: int = 64, boxes: int = 4, negs: int = 10) -> SyntheticBatches:
    t = model.config.text_config
    return SyntheticBatches(f"synthetic://?samples={samples}", 4, 0, 1, 7, model.config.vision_config.image_size,
                            TextSpec(t.vocab_size, t.bos_token_id, t.eos_token_id, t.pad_token_id), boxes, negs)


def test_trim_keeps_every_row_through_its_first_eos() -> None:
    eos, pad = 9, 9
    ids = torch.tensor([[1, 5, eos, pad, pad, pad], [1, 5, 6, 7, eos, pad], [1, eos, pad, pad, pad, pad]])
    assert real_lengths(ids, eos).tolist() == [3, 5, 2]
    assert trim_ids(ids, eos).shape == (3, 5)
    no_eos = torch.tensor([[1, 2, 3, 4]])
    assert trim_ids(no_eos, eos).shape == (1, 4)


def test_trimmed_text_features_equal_padded_ones(model: FGCLIPModel) -> None:
    b = _batches(model).batch(0)
    eos = model.config.text_config.eos_token_id
    with torch.no_grad():
        for ids, short in ((b.long_input_ids, False), (b.short_input_ids, True)):
            full = model.get_text_features(ids, walk_short_pos=short)
            trimmed = model.get_text_features(trim_ids(ids, eos), walk_short_pos=short)
            assert trim_ids(ids, eos).shape[1] < ids.shape[1]
            torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-6)


def _loss_and_grads(module: FGCLIPTrainModule, batch, fused: bool):
    module.fused = fused
    module.zero_grad(set_to_none=True)
    out = module(batch)
    out["loss"].backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in out.items()}, grads, module.last_stats


@pytest.mark.parametrize("stage", [1, 2])
def test_fused_step_equals_naive_step_losses_and_gradients(model: FGCLIPModel, stage: int) -> None:
    src = _batches(model)
    batch = src.batch(3)
    assert stage == 1 or (batch.hardneg_mask[..., 0].any() and not batch.hardneg_mask.all())
    module = FGCLIPTrainModule(model, stage, LossConfig(), model.config.text_config.eos_token_id)
    fused, g_fused, s_fused = _loss_and_grads(module, batch, True)
    naive, g_naive, s_naive = _loss_and_grads(module, batch, False)
    assert set(fused) == set(naive)
    expected_terms = {"loss", "loss_long", "loss_short"} | ({"loss_region", "loss_hardneg"} if stage == 2 else set())
    assert expected_terms == {k for k in fused if k.startswith("loss")}
    for k in fused:
        torch.testing.assert_close(fused[k], naive[k], rtol=1e-5, atol=1e-6)
    assert set(g_fused) == set(g_naive)
    assert "scales.logit_scale" in g_fused and (stage == 1 or "scales.logit_scale_hardneg" in g_fused)
    for n in g_fused:
        torch.testing.assert_close(g_fused[n], g_naive[n], rtol=1e-4, atol=1e-6, msg=n)
    assert s_fused.text_tokens < s_naive.text_tokens


def test_length_buckets_trade_padding_against_forwards() -> None:
    lengths = torch.tensor([3] * 100 + [20] * 2 + [4] * 50)
    groups = length_buckets(lengths, overhead_tokens=200)  # merging 3 into 4 costs 100 < 200
    assert [sorted(set(lengths[g].tolist())) for g in groups] == [[3, 4], [20]]
    assert sorted(torch.cat(groups).tolist()) == list(range(152))
    assert len(length_buckets(lengths, overhead_tokens=10**9)) == 1
    assert len(length_buckets(lengths, overhead_tokens=99)) == 3  # below 100 keeping 3 apart pays
    assert len(length_buckets(lengths, overhead_tokens=0)) == 3
    assert length_buckets(torch.tensor([], dtype=torch.long), 5) == []


def test_bucketed_short_texts_keep_row_order_and_values(model: FGCLIPModel) -> None:
    b = _batches(model).batch(2)
    eos = model.config.text_config.eos_token_id
    ids = torch.cat([b.short_input_ids, b.box_input_ids[b.box_mask]])
    with torch.no_grad():
        one = encode_short_texts(model, ids, eos, overhead_tokens=10**9)
        many = encode_short_texts(model, ids, eos, overhead_tokens=0)
    torch.testing.assert_close(many, one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("overhead", "short_calls"), [(10**9, 1), (0, None)])
def test_fused_step_runs_one_vision_pass_and_bucketed_short_text_forwards(model: FGCLIPModel, monkeypatch,
                                                                          overhead: int, short_calls) -> None:
    calls = {"image": 0, "text": []}
    enc, txt = model.encode_image, model.get_text_features

    def spy_image(*a, **k):
        calls["image"] += 1
        return enc(*a, **k)

    def spy_text(ids, walk_short_pos=True):
        calls["text"].append(walk_short_pos)
        return txt(ids, walk_short_pos=walk_short_pos)

    monkeypatch.setattr(model, "encode_image", spy_image)
    monkeypatch.setattr(model, "get_text_features", spy_text)
    module = FGCLIPTrainModule(model, 2, LossConfig(), model.config.text_config.eos_token_id,
                               bucket_overhead_tokens=overhead)
    batch = _batches(model).batch(0)
    module(batch)
    assert calls["image"] == 1
    assert calls["text"].count(False) == 1
    sel = batch.box_mask & batch.hardneg_mask[..., 0]
    ids = torch.cat([batch.short_input_ids, batch.box_input_ids[batch.box_mask],
                     batch.hardneg_input_ids[sel][batch.hardneg_mask[sel]]])
    distinct = len(set(real_lengths(ids, model.config.text_config.eos_token_id).tolist()))
    assert calls["text"].count(True) == (short_calls or distinct)


def test_batch_without_boxes_or_negatives_gives_finite_zero_terms(model: FGCLIPModel) -> None:
    batch = _batches(model).batch(0)
    batch.box_mask[:] = False
    batch.hardneg_mask[:] = False
    out = FGCLIPTrainModule(model, 2, LossConfig(), model.config.text_config.eos_token_id)(batch)
    assert out["loss_region"].item() == 0.0 and out["loss_hardneg"].item() == 0.0
    assert torch.isfinite(out["loss"])
    out["loss"].backward()


def test_scales_move_to_the_wrapper_and_come_back_as_0_dim_in_the_model_state(model: FGCLIPModel) -> None:
    with torch.no_grad():
        model.logit_scale_hardneg.fill_(1.25)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    module = FGCLIPTrainModule(model, 2, LossConfig(), model.config.text_config.eos_token_id)
    assert all(p.ndim >= 1 for p in module.parameters())
    state = module.model_state_dict()
    assert state.keys() == expected.keys()
    for k in expected:
        assert torch.equal(state[k], expected[k]), k


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(model: FGCLIPModel) -> None:
    batch = _batches(model).batch(1)
    module = FGCLIPTrainModule(model, 2, LossConfig(), model.config.text_config.eos_token_id)
    plain, g_plain, _ = _loss_and_grads(module, batch, True)
    model.gradient_checkpointing_enable()
    ckpt, g_ckpt, _ = _loss_and_grads(module, batch, True)
    torch.testing.assert_close(ckpt["loss"], plain["loss"], rtol=1e-6, atol=1e-7)
    for n in g_plain:
        torch.testing.assert_close(g_ckpt[n], g_plain[n], rtol=1e-5, atol=1e-7, msg=n)
