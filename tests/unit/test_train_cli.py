"""`fgclip train` argument handling (no training is started by these tests)."""

from __future__ import annotations

from click.testing import CliRunner

from fgclip_core.cli import cli


def test_help_lists_the_interface_flags() -> None:
    res = CliRunner().invoke(cli, ["train", "--help"])
    assert res.exit_code == 0
    for flag in ("--recipe", "--config", "--data", "--output", "--init", "--max-steps", "--save-every", "--nproc",
                 "--resume", "--seed", "--set"):
        assert flag in res.output


def test_recipe_or_config_exactly_one_and_data_required(tmp_path) -> None:
    r = CliRunner()
    res = r.invoke(cli, ["train", "--data", "synthetic://", "--output", str(tmp_path)])
    assert res.exit_code == 2 and "exactly one" in res.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stage: 1\n")
    res = r.invoke(cli, ["train", "--recipe", "tiny-cpu-stage1", "--config", str(cfg), "--data", "x",
                         "--output", str(tmp_path)])
    assert res.exit_code == 2 and "exactly one" in res.output
    res = r.invoke(cli, ["train", "--recipe", "tiny-cpu-stage1", "--output", str(tmp_path)])
    assert res.exit_code == 2 and "--data" in res.output


def test_bad_override_and_fp16_are_usage_errors(tmp_path) -> None:
    r = CliRunner()
    base = ["train", "--recipe", "tiny-cpu-stage2", "--data", "synthetic://", "--output", str(tmp_path)]
    res = r.invoke(cli, [*base, "--set", "optim.lr=-1"])
    assert res.exit_code == 2 and "optim.lr" in res.output
    res = r.invoke(cli, [*base, "--set", "deepspeed.precision=fp16"])
    assert res.exit_code == 2 and "fp16 is not supported" in res.output
    res = r.invoke(cli, [*base, "--resume", "earliest"])
    assert res.exit_code == 2


def test_cpu_allocator_tcmalloc_missing_is_a_usage_error(tmp_path, monkeypatch) -> None:
    import fgclip_core.train.allocator as alloc

    monkeypatch.delenv("FGCLIP_TCMALLOC", raising=False)
    monkeypatch.setattr(alloc, "find_tcmalloc", lambda: None)
    res = CliRunner().invoke(cli, ["train", "--recipe", "tiny-cpu-stage2", "--data", "synthetic://",
                                   "--output", str(tmp_path / "run"), "--cpu-allocator", "tcmalloc"])
    assert res.exit_code == 2 and "make cpu-allocator" in res.output
    assert not (tmp_path / "run").exists()   # nothing started
