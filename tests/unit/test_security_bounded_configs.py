"""Issue 14, section 5: bounded work before validation.

Config bombs are refused before any expensive work: a ``config.json`` with absurd sizes by the
config's upper bounds, a config that disagrees with the weights by the safetensors header (before
any module is built), a YAML alias bomb / recursive alias / deep nesting / unsafe tag by the one YAML
loader, and an image processor config with an absurd size or a zero std by its validation and by
the check against the model's ``image_size``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from fgclip_core.config import ConfigError, apply_overrides, load_config, read_mapping
from fgclip_core.model import FGCLIPConfig, FGCLIPModel, ImageProcessor
from fgclip_core.model import checkpoint as ckpt_mod
from fgclip_core.model.build import convert_checkpoint
from fgclip_core.model.checkpoint import CheckpointError
from fgclip_core.model.processing import PREPROCESSOR_NAME, ImageProcessorConfig
from fgclip_core.safe_yaml import MAX_ALIASES, MAX_BYTES, load_yaml, read_yaml

REPO = Path(__file__).resolve().parents[2]


# ---- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def ckpt(tiny_checkpoint_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint_dir, dest)
    return dest


@pytest.fixture
def hf_ckpt(hf_clip_tiny_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "hf"
    shutil.copytree(hf_clip_tiny_dir, dest)
    return dest


@pytest.fixture
def no_module_building(monkeypatch):
    """Fails the test if the checkpoint loader builds an FGCLIPModel (the check must come first)."""
    def refuse(*a, **k):
        raise AssertionError("FGCLIPModel was built before the weights were checked against config.json")

    monkeypatch.setattr(ckpt_mod, "FGCLIPModel", refuse)


def edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


# ---- config.json bounds -----------------------------------------------------------------------
@pytest.mark.parametrize(("section", "field", "value"), [
    ("text_config", "num_hidden_layers", 100000),
    ("vision_config", "num_hidden_layers", 100000),
    ("text_config", "hidden_size", 10**6),
    ("text_config", "vocab_size", 10**9),
    ("text_config", "intermediate_size", 10**7),
    ("text_config", "num_attention_heads", 4096),
    ("text_config", "max_position_embeddings", 10**6),
    ("vision_config", "image_size", 50000),
    ("vision_config", "num_channels", 1000),
])
def test_absurd_model_config_is_refused_before_anything_is_built(ckpt, no_module_building, section, field, value):
    edit_json(ckpt / "config.json", lambda d: d[section].__setitem__(field, value))
    with pytest.raises(CheckpointError, match=rf"config\.json: invalid model config: {section}\.{field}: "
                                              r"Input should be less than or equal to"):
        FGCLIPModel.from_pretrained(str(ckpt))


def test_too_many_patches_are_refused():
    with pytest.raises(ConfigError, match=r"gives 262144 patches, more than 65536"):
        FGCLIPConfig.from_any_dict({"model_type": "fgclip", "vision_config": {"image_size": 4096, "patch_size": 8,
                                                                              "hidden_size": 64,
                                                                              "num_attention_heads": 2}})


def test_hf_clip_config_bomb_is_refused_on_convert(hf_ckpt, tmp_path, no_module_building):
    edit_json(hf_ckpt / "config.json", lambda d: d["text_config"].__setitem__("num_hidden_layers", 100000))
    with pytest.raises(CheckpointError, match=r"config\.json: invalid model config: text_config\.num_hidden_layers"):
        convert_checkpoint(hf_ckpt, tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_convert_cli_prints_one_line_for_a_config_bomb(hf_ckpt, tmp_path):
    from fgclip_core.cli import cli

    edit_json(hf_ckpt / "config.json", lambda d: d["vision_config"].__setitem__("num_hidden_layers", 100000))
    r = CliRunner().invoke(cli, ["model", "convert", "--from", str(hf_ckpt), "--output", str(tmp_path / "o")])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "config.json" in lines[0]
    assert "vision_config.num_hidden_layers" in lines[0] and "Traceback" not in r.output


# ---- config.json vs the safetensors header -----------------------------------------------------
@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["text_config"].__setitem__("num_hidden_layers", 200),
     r"text_model: config\.json says num_hidden_layers=200, the weights hold 2 layer\(s\) numbered 0\.\.1"),
    (lambda d: d["vision_config"].__setitem__("num_hidden_layers", 1),
     r"vision_model: config\.json says num_hidden_layers=1, the weights hold 2 layer"),
    (lambda d: d["text_config"].__setitem__("vocab_size", 60000),
     r"token_embedding\.weight: checkpoint \(49408, 64\) vs model \(60000, 64\) \(text vocab_size"),
    (lambda d: d["vision_config"].__setitem__("image_size", 128),
     r"vision_model\.embeddings\.position_embedding\.weight: checkpoint \(17, 64\) vs model \(65, 64\)"),
    (lambda d: d["vision_config"].__setitem__("patch_size", 32),
     r"patch_embedding\.weight: checkpoint \(64, 3, 16, 16\) vs model \(64, 3, 32, 32\)"),
    (lambda d: d["text_config"].update(hidden_size=128, num_attention_heads=2),
     r"text_model\.final_layer_norm\.weight: checkpoint \(64,\) vs model \(128,\)"),
    (lambda d: d.__setitem__("projection_dim", 32),
     r"visual_projection\.weight: checkpoint \(64, 64\) vs model \(32, 64\)"),
])
def test_config_disagreeing_with_the_header_is_refused_before_building(ckpt, no_module_building, edit, message):
    edit_json(ckpt / "config.json", edit)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: does not match config\.json: .*" + message):
        FGCLIPModel.from_pretrained(str(ckpt))


def test_bin_weights_are_checked_against_the_config_before_building(ckpt, no_module_building):
    sd = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    torch.save(sd, ckpt / "pytorch_model.bin")
    edit_json(ckpt / "config.json", lambda d: d["text_config"].__setitem__("num_hidden_layers", 200))
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: does not match config\.json: text_model: "
                                              r"config\.json says num_hidden_layers=200"):
        FGCLIPModel.from_pretrained(str(ckpt))


def test_header_claiming_many_layers_is_refused_by_the_config_bound(ckpt, no_module_building):
    """Weights and config agreeing on 100000 layers are still refused: by the bound, at once."""
    sd = load_file(str(ckpt / "model.safetensors"))
    extra = {f"text_model.encoder.layers.{i}.layer_norm1.weight": torch.zeros(1) for i in range(2, 3000)}
    save_file({**sd, **extra}, str(ckpt / "model.safetensors"))
    edit_json(ckpt / "config.json", lambda d: d["text_config"].__setitem__("num_hidden_layers", 100000))
    with pytest.raises(CheckpointError, match=r"text_config\.num_hidden_layers: Input should be less than or equal"):
        FGCLIPModel.from_pretrained(str(ckpt))


def test_matching_checkpoint_still_loads(ckpt):
    model = FGCLIPModel.from_pretrained(str(ckpt))
    assert len(model.text_model.encoder.layers) == 2


def test_hf_clip_checkpoint_still_converts(hf_ckpt, tmp_path):
    convert_checkpoint(hf_ckpt, tmp_path / "out")
    assert FGCLIPModel.from_pretrained(str(tmp_path / "out")).config.text_config.long_max_position_embeddings == 248


# ---- YAML --------------------------------------------------------------------------------------
def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["l0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(billion_laughs())
    with pytest.raises(ConfigError, match=r"bomb\.yaml: not valid YAML \(or refused\): expands to more than"):
        read_mapping(p)


def test_too_many_aliases_are_refused():
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    with pytest.raises(ConfigError, match=rf"more than {MAX_ALIASES} alias uses"):
        load_yaml(text, "many.yaml")


def test_recursive_alias_is_refused():
    with pytest.raises(ConfigError, match=r"loop\.yaml: .*recursive alias"):
        load_yaml("a: &a [1, *a]\n", "loop.yaml")


def test_deep_nesting_is_refused():
    with pytest.raises(ConfigError, match=r"deep\.yaml: .*(nested deeper than|nested too deeply)"):
        load_yaml("a: " + "[" * 100000 + "]" * 100000 + "\n", "deep.yaml")
    with pytest.raises(ConfigError, match=r"deep2\.yaml: .*nested deeper than 100 levels"):
        load_yaml("a: " + "[" * 150 + "]" * 150 + "\n", "deep2.yaml")


def test_python_tags_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "ctor.yaml"
    p.write_text(f'x: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match=r"ctor\.yaml: not valid YAML \(or refused\): could not determine a "
                                          r"constructor for the tag 'tag:yaml\.org,2002:python/object/apply"):
        read_mapping(p)
    assert not marker.exists()


def test_oversized_yaml_is_refused_before_reading(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_text("a: " + "x" * (MAX_BYTES + 10) + "\n")
    with pytest.raises(ConfigError, match=r"big\.yaml: .*larger than"):
        read_mapping(p)
    with pytest.raises(ConfigError, match=r"big\.yaml: YAML larger than"):
        read_yaml(p)


def test_plain_aliases_and_merge_keys_still_work(tmp_path):
    text = "base: &base {lr: 0.001, warmup: 10}\nstage1:\n  <<: *base\n  lr: 0.002\nlist: [*base, *base]\n"
    data = load_yaml(text, "ok.yaml")
    assert data["stage1"] == {"lr": 0.002, "warmup": 10} and data["list"] == [data["base"], data["base"]]


def test_overrides_go_through_the_safe_loader():
    with pytest.raises(ConfigError, match=r"override 'x=!!python/name:os\.system'"):
        apply_overrides({}, ["x=!!python/name:os.system"])
    assert apply_overrides({}, ["a.b=[1, 2]", "c=0.5", "d=true"]) == {"a": {"b": [1, 2]}, "c": 0.5, "d": True}


@pytest.mark.parametrize("kind", ["train", "eval-suite", "annotate", "data"])
def test_every_yaml_reader_refuses_the_bomb(tmp_path, kind):
    p = tmp_path / "bomb.yaml"
    p.write_text(billion_laughs())
    with pytest.raises(ConfigError, match=r"bomb\.yaml: not valid YAML \(or refused\)"):
        if kind == "train":
            from fgclip_core.train.config import resolve_config

            resolve_config(None, str(p), [])
        elif kind == "eval-suite":
            from fgclip_core.eval.config import load_suite_file

            load_suite_file(p)
        elif kind == "annotate":
            from fgclip_core.annotate.config import load_annotate_config

            load_annotate_config(p)
        else:
            from fgclip_core.data.config import DataConfig

            load_config(DataConfig, p)


def test_train_cli_refuses_the_bomb_in_one_line(tmp_path):
    from fgclip_core.cli import cli

    p = tmp_path / "bomb.yaml"
    p.write_text(billion_laughs())
    r = CliRunner().invoke(cli, ["train", "--config", str(p), "--output", str(tmp_path / "run")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "bomb.yaml: not valid YAML (or refused): expands to more than" in lines[0]


def test_no_yaml_loader_outside_the_safe_module():
    """Every YAML the project reads goes through fgclip_core.safe_yaml (the caps live there)."""
    pattern = re.compile(r"\byaml\.(safe_load|load|unsafe_load|full_load|load_all|safe_load_all|compose)\b")
    offenders = []
    for folder in ("fgclip_core", "assets", "orchestration", "benchmarks"):
        for f in (REPO / folder).rglob("*.py"):
            if f.name != "safe_yaml.py" and pattern.search(f.read_text()):
                offenders.append(str(f.relative_to(REPO)))
    assert offenders == []


# ---- image processor settings ------------------------------------------------------------------
@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(size={"height": 50000, "width": 50000}, crop_size={"height": 50000, "width": 50000}),
     r"size: Input should be less than or equal to 4096"),
    (lambda d: d.update(image_std=[0, 0, 0]), r"image_std.*must be in \[1e-6, 10\]"),
    (lambda d: d.update(image_std=[0.2, -0.3, 0.2]), r"image_std.*must be in \[1e-6, 10\]"),
    (lambda d: d.update(image_mean=[0.5, 0.5]), r"image_mean must be a list of 3 numbers"),
    (lambda d: d.update(image_mean=[0.5, 0.5, float("nan")]), r"image_mean.*must be in \[0, 1\]"),
    (lambda d: d.update(image_mean="abc"), r"image_mean must be a list of 3 numbers"),
    (lambda d: d.update(size={"height": "64", "width": "64"}, do_center_crop=False),
     r"image size must be a whole number of pixels"),
    (lambda d: d.update(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}),
     r"size 32 differs from the model's vision image_size 64 in config\.json"),
])
def test_bad_processor_settings_are_refused(ckpt, edit, message):
    edit_json(ckpt / PREPROCESSOR_NAME, edit)
    with pytest.raises(ConfigError, match=rf"{PREPROCESSOR_NAME}: .*{message}"):
        ImageProcessor.from_pretrained(ckpt)


def test_processor_without_model_config_is_only_validated(ckpt, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(ckpt / PREPROCESSOR_NAME, alone / PREPROCESSOR_NAME)
    assert ImageProcessor.from_pretrained(alone).size == 64
    with pytest.raises(ValueError, match=r"image_std"):
        ImageProcessorConfig(image_std=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match=r"size"):
        ImageProcessorConfig(size=50000)


def test_eval_encoder_refuses_a_processor_that_does_not_fit_the_model(ckpt):
    from fgclip_core.eval.encoder import FGCLIPEncoder

    edit_json(ckpt / PREPROCESSOR_NAME, lambda d: d.update(size={"height": 96, "width": 96},
                                                          crop_size={"height": 96, "width": 96}))
    with pytest.raises(ConfigError, match=r"size 96 differs from the model's vision image_size 64"):
        FGCLIPEncoder(str(ckpt), device="cpu")


def test_convert_replaces_a_mismatched_size_but_refuses_a_zero_std(hf_ckpt, tmp_path):
    edit_json(hf_ckpt / PREPROCESSOR_NAME, lambda d: d.update(size={"height": 32, "width": 32},
                                                             crop_size={"height": 32, "width": 32}))
    notes = convert_checkpoint(hf_ckpt, tmp_path / "a")
    assert any("size 32" in n for n in notes) and ImageProcessor.from_pretrained(tmp_path / "a").size == 64
    edit_json(hf_ckpt / PREPROCESSOR_NAME, lambda d: d.update(image_std=[0, 0, 0]))
    with pytest.raises(ConfigError, match=r"image_std"):
        convert_checkpoint(hf_ckpt, tmp_path / "b")
