"""Issue 14, section 7 (CLI part): every error a user can cause is one line, `error: ...`, exit 1
(usage: 2), no traceback; `fgclip --debug` / FGCLIP_DEBUG=1 add the traceback; a bug keeps its
traceback. Credentials in URLs never reach the message."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fgclip_core.cli import cli
from fgclip_core.cli import errors as cli_errors
from fgclip_core.errors import UserError, one_line
from fgclip_core.redact import redact_text, redact_uri, strip_userinfo


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.setenv("FGCLIP_DEBUG", "")  # restored after the test (--debug sets it for child processes)
    cli_errors.set_debug(False)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def assert_one_line(r, code: int, *needles: str) -> str:
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_yaml_constructor_error_in_train_config(tmp_path):
    p = tmp_path / "ctor.yaml"
    p.write_text('x: !!python/object/apply:os.system ["echo hi"]\n')
    assert_one_line(run("train", "--config", str(p), "--output", str(tmp_path / "o")), 2, "ctor.yaml",
                    "could not determine a constructor")


def test_invalid_field_in_train_config_names_the_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  lr: -1\n")
    line = assert_one_line(run("train", "--config", str(p), "--data", "synthetic://", "--output",
                               str(tmp_path / "o")), 2, "bad.yaml", "optim.lr")
    assert line.endswith(" train --help')")  # CliRunner names the program 'cli', the console script 'fgclip'


def test_missing_data(tmp_path):
    assert_one_line(run("train", "--recipe", "tiny-cpu-stage1", "--output", str(tmp_path / "o")), 2,
                    "no training data: pass --data")


def test_missing_required_option():
    assert_one_line(run("model", "convert", "--output", "x"), 2, "Missing option '--from'")


def test_missing_checkpoint_on_convert(tmp_path):
    assert_one_line(run("model", "convert", "--from", str(tmp_path / "nope"), "--output", str(tmp_path / "o")), 1,
                    str(tmp_path / "nope"), "checkpoint directory does not exist")


def test_corrupt_weights_on_convert(tiny_checkpoint_dir, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(tiny_checkpoint_dir, src)
    (src / "model.safetensors").write_bytes(b"\x00" * 64)
    assert_one_line(run("model", "convert", "--from", str(src), "--output", str(tmp_path / "o")), 1,
                    "model.safetensors", "cannot read safetensors header")


def test_manifest_error_on_verify(tmp_path):
    (tmp_path / "shards").mkdir()
    assert_one_line(run("data", "verify", "--shards", str(tmp_path / "shards")), 1, "manifest")


def test_bad_metrics_file_on_register(tiny_checkpoint_dir, tmp_path):
    m = tmp_path / "metrics.json"
    m.write_text("{not json")
    assert_one_line(run("registry", "register", "--model", str(tiny_checkpoint_dir), "--name", "x",
                        "--metrics", str(m), "--tracking-uri", "sqlite:///" + str(tmp_path / "db")), 1,
                    "metrics.json: not an fgclip eval metrics.json")


def test_eval_with_a_missing_benchmark(tiny_checkpoint_dir, tmp_path):
    assert_one_line(run("eval", "fgovd", "--model", str(tiny_checkpoint_dir), "--data", str(tmp_path / "absent.jsonl"),
                        "--output", str(tmp_path / "o")), 1, "absent.jsonl")


def test_eval_all_with_a_broken_suite_file(tiny_checkpoint_dir, tmp_path):
    p = tmp_path / "benchmarks.yaml"
    p.write_text("benchmarks: [\n")
    assert_one_line(run("eval", "all", "--model", str(tiny_checkpoint_dir), "--data", str(p),
                        "--output", str(tmp_path / "o")), 1, "benchmarks.yaml", "not valid YAML")


def test_debug_flag_shows_the_traceback(tmp_path):
    r = run("--debug", "model", "convert", "--from", str(tmp_path / "nope"), "--output", str(tmp_path / "o"))
    assert r.exit_code == 1
    assert "Traceback (most recent call last)" in r.output and "CheckpointError" in r.output
    assert r.output.strip().splitlines()[-1].startswith("error: ")


def test_debug_env_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("FGCLIP_DEBUG", "1")
    r = run("model", "convert", "--from", str(tmp_path / "nope"), "--output", str(tmp_path / "o"))
    assert r.exit_code == 1 and "Traceback (most recent call last)" in r.output


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    import fgclip_core.model.build as build

    def broken(*a, **k):
        raise KeyError("internal bug")

    monkeypatch.setattr(build, "convert_checkpoint", broken)
    r = run("model", "convert", "--from", str(tmp_path), "--output", str(tmp_path / "o"))
    assert r.exit_code == 1 and isinstance(r.exception, KeyError)  # not swallowed into a one-liner


def test_help_and_success_exit_zero():
    r = run("--help")
    assert r.exit_code == 0 and "--debug" in r.output


def test_credentials_never_reach_an_error_line(monkeypatch, tmp_path):
    import fgclip_core.model.build as build
    from fgclip_core.model.checkpoint import CheckpointError

    def leaky(*a, **k):
        raise CheckpointError("s3://AKIA:topsecret@bucket/ckpt: cannot read\nsecond line")

    monkeypatch.setattr(build, "convert_checkpoint", leaky)
    line = assert_one_line(run("model", "convert", "--from", str(tmp_path), "--output", str(tmp_path / "o")), 1,
                           "s3://***@bucket/ckpt: cannot read; second line")
    assert "topsecret" not in line


def test_python_m_train_entry_reports_like_fgclip(tmp_path):
    from fgclip_core.cli.train_cmd import train

    r = CliRunner().invoke(train, ["--recipe", "tiny-cpu-stage1", "--output", str(tmp_path / "o")])
    assert_one_line(r, 2, "no training data")


# ---- helpers -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("uri", "masked"), [
    ("http://user:pa%40ss@host:5000/x", "http://***@host:5000/x"),
    ("https://token@host", "https://***@host"),
    ("http://host:5000", "http://host:5000"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("/local/path", "/local/path"),
    ("https://h/p?X-Amz-Signature=abc&x=1", "https://h/p?X-Amz-Signature=***&x=1"),
])
def test_redact_uri(uri, masked):
    assert redact_uri(uri) == masked


def test_redact_text_and_strip_userinfo():
    assert redact_text("API request to http://u:p@h:1/api failed; see https://x@y/z") == \
        "API request to http://***@h:1/api failed; see https://***@y/z"
    assert redact_text("uri http://u:p@ss@h:1/a@b and mail a@b.c") == "uri http://***@h:1/a@b and mail a@b.c"
    assert redact_uri("http://u:p@ss@h:1/a") == "http://***@h:1/a"
    assert strip_userinfo("http://u:p%40w@h:1/a") == ("http://h:1/a", "u", "p@w")
    assert strip_userinfo("http://h:1/a") == ("http://h:1/a", None, None)


def test_one_line_and_user_error_types():
    assert one_line("a\n\n  b\nFor further information visit https://errors.pydantic.dev") == "a; b"
    from fgclip_core.config import ConfigError
    from fgclip_core.data.shards import ManifestError
    from fgclip_core.model import CheckpointError, TokenizerError

    for t in (ConfigError, CheckpointError, TokenizerError):
        assert issubclass(t, UserError)
    assert cli_errors.is_user_error(ManifestError("m")) and not cli_errors.is_user_error(KeyError("k"))
    assert cli_errors.is_user_error(json.JSONDecodeError("x", "doc", 0))
    assert not cli_errors.is_user_error(click.ClickException("c"))  # handled by click's own branch


def test_report_passes_exit_codes(tmp_path: Path):
    with pytest.raises(SystemExit) as e:
        cli_errors.report(click.exceptions.Exit(3))
    assert e.value.code == 3


def test_spawned_workers_get_a_credentialed_uri_through_the_environment(monkeypatch):
    from fgclip_core.cli.train_cmd import _config_for_workers
    from fgclip_core.train.config import resolve_config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = resolve_config("tiny-cpu-stage1", None, ['tracking.uri="http://u:hunter2@127.0.0.1:5000"'])
    dumped, env = _config_for_workers(cfg, None)
    assert dumped["tracking"]["uri"] is None and "hunter2" not in json.dumps(dumped)
    assert env is not None and env["MLFLOW_TRACKING_URI"] == "http://u:hunter2@127.0.0.1:5000"
    plain = resolve_config("tiny-cpu-stage1", None, ['tracking.uri="http://127.0.0.1:5000"'])
    dumped, env = _config_for_workers(plain, {"A": "1"})
    assert dumped["tracking"]["uri"] == "http://127.0.0.1:5000" and env == {"A": "1"}
