"""Training config: recipes, official stage-2 defaults, DeepSpeed JSON filling, param groups, schedule."""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest
import torch

from fgclip_core.config import ConfigError
from fgclip_core.train.config import DS_CONFIGS_DIR, TrainConfig, list_recipes, resolve_config
from fgclip_core.train.ds_config import build_ds_config
from fgclip_core.train.engine import build_optimizer, lr_lambda, param_groups


def test_every_shipped_recipe_validates_and_required_names_exist() -> None:
    names = list_recipes()
    for required in ("tiny-cpu-stage1", "tiny-cpu-stage2", "stage1", "stage2", "stage1-ViT-L-14-336",
                     "stage2-ViT-L-14-336"):
        assert required in names
    for n in names:
        cfg = resolve_config(recipe=n)
        build_ds_config(cfg, "cuda")
        build_ds_config(cfg, "cpu")


def test_stage2_recipes_match_the_official_recipe() -> None:
    for name, arch in (("stage2", "ViT-B-16"), ("stage2-ViT-L-14-336", "ViT-L-14-336")):
        cfg = resolve_config(recipe=name)
        assert cfg.model.arch == arch and cfg.stage == 2
        assert cfg.optim.lr == 1e-6 and cfg.optim.weight_decay == 0.001
        assert cfg.optim.warmup_steps == 200 and cfg.optim.schedule == "cosine"
        assert cfg.deepspeed.zero_stage == 2 and cfg.deepspeed.precision == "bf16"
        lc = cfg.data.loader
        assert (lc.max_boxes, lc.num_negatives, lc.long_length, lc.short_length) == (4, 10, 248, 77)
        assert (cfg.loss.region_weight, cfg.loss.hardneg_weight) == (0.1, 0.5)
        assert cfg.optim.no_decay == "official" and cfg.model.reset_region_scales_at_start is True
        assert cfg.optim.logit_scale_max is None          # the official code: no cap on the scales


def test_recipes_say_which_parameter_grouping_and_scale_reset_they_use() -> None:
    for name in ("stage1", "stage1-ViT-L-14-336", "stage2", "stage2-ViT-L-14-336"):
        assert resolve_config(recipe=name).optim.no_decay == "official", name
    for name in ("stage1", "stage1-ViT-L-14-336", "tiny-cpu-stage1", "tiny-cpu-stage2"):
        assert resolve_config(recipe=name).model.reset_region_scales_at_start is False, name
    for name in ("tiny-cpu-stage1", "tiny-cpu-stage2"):
        assert resolve_config(recipe=name).optim.no_decay == "clip", name
    defaults = TrainConfig()
    assert (defaults.optim.no_decay, defaults.optim.logit_scale_max) == ("clip", None)
    assert defaults.model.reset_region_scales_at_start is False
    with pytest.raises(ConfigError, match="no_decay"):
        resolve_config(recipe="tiny-cpu-stage2", overrides=["optim.no_decay=all"])
    with pytest.raises(ConfigError, match="logit_scale_max"):
        resolve_config(recipe="tiny-cpu-stage2", overrides=["optim.logit_scale_max=0"])
    assert resolve_config(recipe="stage2", overrides=[f"optim.logit_scale_max={math.log(100)}"]
                          ).optim.logit_scale_max == pytest.approx(math.log(100))


def test_fp16_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ConfigError, match="fp16 is not supported"):
        resolve_config(recipe="tiny-cpu-stage2", overrides=["deepspeed.precision=fp16"])


def test_unknown_key_and_bad_recipe_are_errors() -> None:
    with pytest.raises(ConfigError, match="optim"):
        resolve_config(recipe="tiny-cpu-stage2", overrides=["optim.lrr=1"])
    with pytest.raises(ConfigError, match="unknown recipe"):
        resolve_config(recipe="nope")
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_config()


def test_ds_config_auto_values_come_from_the_training_config() -> None:
    cfg = resolve_config(recipe="tiny-cpu-stage2", overrides=["optim.grad_accum=3", "optim.grad_clip=0.5",
                                                               "deepspeed.zero_stage=3"])
    ds = build_ds_config(cfg, "cpu")
    assert ds["train_micro_batch_size_per_gpu"] == cfg.data.loader.batch_size
    assert ds["gradient_accumulation_steps"] == 3 and ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] is False and ds["zero_optimization"]["stage"] == 3
    assert build_ds_config(resolve_config(recipe="stage2"), "cuda")["bf16"]["enabled"] is True
    # contiguous gradient buffers: against fragmentation on accelerators, an extra copy on CPU
    assert ds["zero_optimization"]["contiguous_gradients"] is False
    assert build_ds_config(resolve_config(recipe="stage2"), "cuda")["zero_optimization"]["contiguous_gradients"] is True
    assert "contiguous_gradients" not in build_ds_config(
        resolve_config(recipe="tiny-cpu-stage2", overrides=["deepspeed.zero_stage=0"]), "cpu").get("zero_optimization", {})
    for stage in range(4):
        assert json.loads((DS_CONFIGS_DIR / f"zero{stage}.json").read_text())["zero_optimization"]["stage"] == stage


def test_ds_config_stage_mismatch_and_leftover_auto_are_errors(tmp_path) -> None:
    cfg = resolve_config(recipe="tiny-cpu-stage2", overrides=["deepspeed.zero_stage=1",
                                                               f"deepspeed.config={DS_CONFIGS_DIR / 'zero2.json'}"])
    with pytest.raises(ConfigError, match="stage is 2"):
        build_ds_config(cfg, "cpu")
    custom = tmp_path / "ds.json"
    custom.write_text(json.dumps({"zero_optimization": {"stage": 2}, "optimizer": {"params": {"lr": "auto"}}}))
    cfg = resolve_config(recipe="tiny-cpu-stage2", overrides=[f"deepspeed.config={custom}"])
    with pytest.raises(ConfigError, match=r"optimizer\.params\.lr"):
        build_ds_config(cfg, "cpu")


def test_param_groups_skip_decay_on_norms_biases_embeddings_scales_and_split_text_lr() -> None:
    from fgclip_core.model import FGCLIPModel, load_arch

    model = FGCLIPModel(load_arch("tiny"))
    cfg = TrainConfig(optim={"lr": 1e-4, "text_lr": 1e-5, "weight_decay": 0.1, "no_decay": "clip"})
    groups = param_groups(model, cfg)
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert len(by_name) == sum(1 for _ in model.parameters())
    no_decay = ["logit_scale", "logit_scale_hardneg", "text_model.embeddings.token_embedding.weight",
                "text_model.embeddings.position_embedding_res.weight", "vision_model.embeddings.class_embedding",
                "vision_model.post_layernorm.weight", "text_model.final_layer_norm.bias"]
    for n in no_decay:
        assert by_name[n]["weight_decay"] == 0.0, n
    for n in ("visual_projection.weight", "vision_model.embeddings.patch_embedding.weight",
              "text_model.encoder.layers.0.self_attn.q_proj.weight"):
        assert by_name[n]["weight_decay"] == 0.1, n
    assert by_name["text_model.encoder.layers.0.mlp.fc1.weight"]["lr"] == 1e-5
    assert by_name["text_filip_projection.weight"]["lr"] == 1e-5
    assert by_name["vision_model.encoder.layers.0.mlp.fc1.weight"]["lr"] == 1e-4
    assert len(groups) == 4


def _official_no_decay_names(names: list[str]) -> set[str]:
    """The official trainer's rule written out by name: LayerNorm weights and every bias."""
    norm = re.compile(r"(layer_norm\d|final_layer_norm|pre_layrnorm|post_layernorm)\.weight$")
    return {n for n in names if n.endswith(".bias") or norm.search(n)}


@pytest.mark.parametrize("wrapped", [False, True])
def test_official_param_groups_decay_all_but_layernorm_weights_and_biases(wrapped) -> None:
    from fgclip_core.losses import LossConfig
    from fgclip_core.model import FGCLIPModel, load_arch
    from fgclip_core.train.step import FGCLIPTrainModule

    model = FGCLIPModel(load_arch("tiny"))
    module = FGCLIPTrainModule(model, 2, LossConfig(), model.config.text_config.eos_token_id) if wrapped else model
    cfg = TrainConfig(optim={"lr": 1e-4, "weight_decay": 0.1, "no_decay": "official"})
    groups = param_groups(module, cfg)
    assert [g["name"] for g in groups] == ["all-decay", "all-no_decay"]
    names = [n for n, _ in module.named_parameters()]
    no_decay = set(groups[1]["param_names"])
    assert groups[1]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 0.1
    assert no_decay == _official_no_decay_names(names)
    assert set(groups[0]["param_names"]) == set(names) - no_decay
    prefix = "model." if wrapped else ""
    scale = "scales." if wrapped else ""
    decayed = set(groups[0]["param_names"])
    for n in (f"{scale}logit_scale", f"{scale}logit_scale_finegraind", f"{scale}logit_scale_hardneg",
              f"{prefix}text_model.embeddings.token_embedding.weight",
              f"{prefix}text_model.embeddings.position_embedding_res.weight",
              f"{prefix}vision_model.embeddings.class_embedding",
              f"{prefix}vision_model.embeddings.position_embedding.weight",
              f"{prefix}visual_projection.weight", f"{prefix}text_filip_projection.weight"):
        assert n in decayed, n
    for n in (f"{prefix}vision_model.post_layernorm.weight", f"{prefix}vision_model.pre_layrnorm.bias",
              f"{prefix}text_model.encoder.layers.0.layer_norm1.weight",
              f"{prefix}text_model.encoder.layers.0.self_attn.q_proj.bias"):
        assert n in no_decay, n
    # the project's grouping differs exactly on embeddings and scales (and agrees on norms and biases)
    clip = param_groups(module, TrainConfig(optim={"weight_decay": 0.1, "no_decay": "clip"}))
    clip_no_decay = {n for g in clip if g["weight_decay"] == 0.0 for n in g["param_names"]}
    extra = clip_no_decay - no_decay
    assert no_decay <= clip_no_decay and extra
    assert all("embedding" in n or "logit_scale" in n for n in extra), extra


def test_warmup_then_cosine_schedule() -> None:
    cfg = TrainConfig(max_steps=110, optim={"warmup_steps": 10, "min_lr_ratio": 0.1})
    f = lr_lambda(cfg)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(110) == pytest.approx(0.1)
    vals = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(vals))
    assert torch.tensor(vals).min() >= 0.1 - 1e-9


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_optimizer_kernels_take_the_same_step(impl) -> None:
    """``optim.implementation`` changes the AdamW kernel, not the update (to float rounding): each kernel
    against the per-tensor "loop" reference."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(257, 3)), torch.nn.Parameter(torch.randn(5))]
    grads = [torch.randn_like(p) for p in params]
    results = {}
    for kind in ("loop", impl):
        ps = [torch.nn.Parameter(p.detach().clone()) for p in params]
        cfg = TrainConfig(optim={"lr": 1e-2, "implementation": kind})
        opt = build_optimizer([{"params": ps[:1], "weight_decay": 0.1}, {"params": ps[1:], "weight_decay": 0.0}], cfg)
        for _ in range(3):
            for p, g in zip(ps, grads, strict=True):
                p.grad = g.clone()
            opt.step()
        results[kind] = ps
        assert bool(opt.defaults.get("fused")) == (kind == "fused")
    for start, a, b in zip(params, results["loop"], results[impl], strict=True):
        assert not torch.equal(a, start)   # the step moved the weights
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
