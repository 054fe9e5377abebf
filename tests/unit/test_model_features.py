"""FG-CLIP feature API on the tiny checkpoint: shapes, region semantics, text pooling, errors."""

from __future__ import annotations

import pytest
import torch

from fgclip_core.model import FGCLIPModel, load_tokenizer


@pytest.fixture(scope="module")
def model(tiny_checkpoint_dir) -> FGCLIPModel:
    return FGCLIPModel.from_pretrained(str(tiny_checkpoint_dir)).eval()


@pytest.fixture(scope="module")
def pixels(model) -> torch.Tensor:
    s = model.config.vision_config.image_size
    return torch.randn(3, 3, s, s, generator=torch.Generator().manual_seed(0))


def test_shapes_and_dense_map_layout(model, pixels):
    d, g = model.config.projection_dim, model.grid_size
    with torch.no_grad():
        dense = model.get_image_dense_features(pixels)
        enc = model.encode_image(pixels, with_dense=True)
        glob = model.get_image_features(pixels)
    assert dense.shape == (3, g * g, d)
    assert enc.dense_map.shape == (3, d, g, g)
    torch.testing.assert_close(enc.image_embeds, glob, rtol=0, atol=0)
    # dense_map[b, :, r, c] is patch r * g + c
    torch.testing.assert_close(enc.dense_map[1, :, 2, 3], dense[1, 2 * g + 3], rtol=0, atol=0)
    assert model.encode_image(pixels, with_dense=False).dense_map is None


def test_dense_features_are_last_block_without_attention_mixing(model, pixels):
    """Each patch's dense feature depends only on that patch's input to the last layer."""
    vm = model.vision_model
    with torch.no_grad():
        before = vm.hidden_before_last(pixels)
        poked = before.clone()
        poked[:, 5] += 1.0
        a, b = vm.dense_from(before), vm.dense_from(poked)
    changed = (a - b).abs().amax(dim=-1) > 0
    assert changed[:, 4].all() and changed.sum() == 3  # CLS dropped: token 5 -> patch 4


def test_box_on_whole_cells_equals_mean_of_dense_cells(model, pixels):
    g = model.grid_size
    with torch.no_grad():
        dense = model.get_image_dense_features(pixels).reshape(3, g, g, -1)
        box_info = torch.tensor([[0, 1.0, 0.0, 3.0, 2.0],   # columns 1..2, rows 0..1 of image 0
                                 [2, 0.0, 0.0, float(g), float(g)],  # whole image 2
                                 [1, 2.0, 1.0, 3.0, 4.0]])  # column 2, rows 1..3 of image 1
        rois = model.get_image_box_roi_features(pixels, box_info)
    torch.testing.assert_close(rois[0], dense[0, 0:2, 1:3].mean(dim=(0, 1)), rtol=0, atol=1e-6)
    torch.testing.assert_close(rois[1], dense[2].mean(dim=(0, 1)), rtol=0, atol=1e-6)
    torch.testing.assert_close(rois[2], dense[1, 1:4, 2:3].mean(dim=(0, 1)), rtol=0, atol=1e-6)


def test_normalised_boxes_batch_across_images(model, pixels):
    g = model.grid_size
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.25, 0.5, 0.75, 1.0]],
                          [[0.5, 0.0, 1.0, 0.5], [0.1, 0.2, 0.6, 0.9]],
                          [[0.0, 0.0, 0.25, 0.25], [0.0, 0.0, 1.0, 1.0]]])
    with torch.no_grad():
        batched = model.get_image_box_roi_features_normalized(pixels, boxes)
        rows = torch.cat([torch.arange(3).repeat_interleave(2)[:, None].float(), boxes.reshape(-1, 4) * g], 1)
        flat = model.get_image_box_roi_features(pixels, rows)
        enc = model.encode_image(pixels, with_dense=True)
        from_map = model.roi_features(enc.dense_map, boxes)
        one_image = model.get_image_box_roi_features_normalized(pixels[1:2], boxes[1:2])
    assert batched.shape == (3, 2, model.config.projection_dim)
    torch.testing.assert_close(batched.reshape(6, -1), flat, rtol=0, atol=1e-6)
    torch.testing.assert_close(from_map, batched, rtol=0, atol=1e-6)
    torch.testing.assert_close(one_image[0], batched[1], rtol=1e-5, atol=1e-6)  # no cross-image mixing
    dense = model.get_image_dense_features(pixels).detach()
    torch.testing.assert_close(batched[0, 0], dense[0].mean(0), rtol=0, atol=1e-6)


def test_text_features_trimmed_inputs_and_modes(model, tiny_checkpoint_dir):
    tok = load_tokenizer(tiny_checkpoint_dir)
    texts = ["a red car parked next to a tree", "two dogs"]
    long_ids, short_ids = tok.encode(texts, "long"), tok.encode(texts, "short")
    with torch.no_grad():
        long_f = model.get_text_features(long_ids, walk_short_pos=False)
        short_f = model.get_text_features(short_ids, walk_short_pos=True)
        trimmed_long = model.get_text_features(long_ids[:, :12], walk_short_pos=False)
        trimmed_short = model.get_text_features(short_ids[:, :12], walk_short_pos=True)
    assert long_f.shape == short_f.shape == (2, model.config.projection_dim)
    torch.testing.assert_close(trimmed_long, long_f, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trimmed_short, short_f, rtol=1e-5, atol=1e-6)
    # Fresh checkpoint: the first 20 long positions are the short ones and both projections are
    # equal, so texts under 20 tokens agree across modes; past 20 the interpolated table differs.
    torch.testing.assert_close(long_f, short_f, rtol=1e-5, atol=1e-6)
    longer = tok.encode([" ".join(["cat"] * 30)], "long")
    with torch.no_grad():
        a = model.get_text_features(longer, walk_short_pos=False)
        b = model.get_text_features(longer[:, :77], walk_short_pos=True)
    assert not torch.allclose(a, b, atol=1e-4)


def test_padding_after_eos_is_ignored_and_empty_batches_work(model):
    eos = model.config.text_config.eos_token_id
    ids = torch.tensor([[49406, 320, 1125, eos] + [eos] * 73, [49406] + [2368] * 30 + [eos] * 46])
    other_padding = ids.clone()
    other_padding[0, 4:] = 7  # whatever follows a row's first EOS cannot change its feature
    with torch.no_grad():
        a = model.get_text_features(ids)
        b = model.get_text_features(other_padding)
        single = model.get_text_features(ids[:1, :4])
        empty = model.get_text_features(ids[:0])
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(single[0], a[0], rtol=1e-5, atol=1e-6)
    assert empty.shape == (0, model.config.projection_dim)


def test_text_rejects_missing_eos_and_overlong_input(model):
    eos = model.config.text_config.eos_token_id
    ok = torch.tensor([[49406, 320, eos]])
    model.get_text_features(ok)
    with pytest.raises(ValueError, match=r"rows \[1\] contain no eos_token_id"):
        model.get_text_features(torch.tensor([[49406, 320, eos], [49406, 320, 1125]]))
    with pytest.raises(ValueError, match="78 tokens but short text allows 77"):
        model.get_text_features(torch.full((1, 78), eos))
    with pytest.raises(ValueError, match="249 tokens but long text allows 248"):
        model.get_text_features(torch.full((1, 249), eos), walk_short_pos=False)


def test_wrong_image_size_is_an_error(model):
    with pytest.raises(ValueError, match=r"pixel_values must be \[B, 3, 64, 64\]"):
        model.get_image_features(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="normalised float pixels"):   # a loader's uint8 batch, not normalised
        model.get_image_features(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_gradient_checkpointing_gives_same_gradients(tiny_checkpoint_dir):
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 64, 64)
    ids = torch.tensor([[49406, 320, 1125, 49407], [49406, 2368, 49407, 49407]])

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        m = FGCLIPModel.from_pretrained(str(tiny_checkpoint_dir)).train()
        if checkpointing:
            m.gradient_checkpointing_enable()
        enc = m.encode_image(pixels, with_dense=True)
        loss = enc.image_embeds.sum() + enc.dense_map.pow(2).mean() + m.get_text_features(ids, False).sum()
        loss.backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and len(plain) > 20
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_forward_returns_both_towers(model, pixels):
    with torch.no_grad():
        out = model(pixel_values=pixels, input_ids=torch.tensor([[49406, 49407]]), with_dense=True)
    assert out.image_embeds.shape[0] == 3 and out.text_embeds.shape[0] == 1
    assert out.dense_map is not None
    torch.testing.assert_close(out.logit_scale, model.logit_scale.exp())


def test_parameters_are_read_only_inside_their_own_module_call(tiny_checkpoint_dir):
    """ZeRO-3 contract: in the forward pass a parameter is materialised only while its owning module
    is being called (pre/post forward hooks). Emulate that and run every feature path."""
    model = FGCLIPModel.from_pretrained(str(tiny_checkpoint_dir))
    real = {p: p.data for p in model.parameters()}
    handles = []
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if not own or m is model:
            continue

        def pre(mod, args, own=own):
            for p in own:
                p.data = real[p]

        def post(mod, args, out, own=own):
            for p in own:
                p.data = torch.empty(0)

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        post(m, None, None)
    s = model.config.vision_config.image_size
    pixels = torch.randn(2, 3, s, s)
    ids = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 20, [49406] + [2368] * 22 + [49407]])
    with torch.no_grad():
        enc = model.encode_image(pixels, with_dense=True)
        total = (enc.image_embeds.sum() + model.roi_features(enc.dense_map, torch.tensor([[[0, 0, 0.5, 0.5]]] * 2)).sum()
                 + model.get_text_features(ids, walk_short_pos=False).sum() + model.get_text_features(ids).sum()
                 + model.get_image_box_roi_features(pixels, torch.tensor([[1, 0.0, 0, 2, 2]])).sum()
                 + model.get_image_dense_features(pixels).sum())
    assert torch.isfinite(total)
    for h in handles:
        h.remove()


def test_bfloat16_model_runs_every_path(tiny_checkpoint_dir, pixels):
    """DeepSpeed bf16 runs the model in bfloat16: every feature path works and stays close to fp32."""
    ref = FGCLIPModel.from_pretrained(str(tiny_checkpoint_dir)).eval()
    half = FGCLIPModel.from_pretrained(str(tiny_checkpoint_dir), dtype=torch.bfloat16).eval()
    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407]])
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.75]]]).expand(3, 1, 4)
    with torch.no_grad():
        for fn in (lambda m: m.get_image_features(pixels),
                   lambda m: m.get_text_features(ids, walk_short_pos=False),
                   lambda m: m.get_image_box_roi_features_normalized(pixels, boxes)):
            a, b = fn(ref), fn(half)
            assert b.dtype == torch.bfloat16
            cos = torch.nn.functional.cosine_similarity(a.flatten(1), b.float().flatten(1))
            assert cos.min() > 0.99, cos
