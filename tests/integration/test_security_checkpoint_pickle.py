"""Issue 14 section 2, end to end: a real checkpoint whose files an attacker replaced (and whose
``COMPLETE.json`` they re-hashed) makes ``fgclip train --resume latest`` stop with one clear line naming
the file, and the payload never runs. One case per kind of file the trainer reads on resume."""

from __future__ import annotations

import shutil

import pytest
import torch

from fgclip_core.train import checkpoint as ckpt
from fgclip_core.train.ds_checkpoint import load_deepspeed_file
from tests.integration.train_run import run_train
from tests.unit.test_security_checkpoint_pickle import Payload, plant

pytestmark = pytest.mark.integration

ARGS = ("--max-steps", "1", "--save-every", "1", "--set", "tracking.enabled=false", "--set", "export=false")
TAG = ckpt.tag_for(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, object]:
    """One finished 1-step run per ZeRO stage the cases need (0: optimizer inside the model states)."""
    base = tmp_path_factory.mktemp("security-runs")
    out = {}
    for zero in (0, 2):
        run_train(base / f"zero{zero}", *ARGS, "--set", f"deepspeed.zero_stage={zero}")
        out[zero] = base / f"zero{zero}"
    return out


def _poison_deepspeed_file(path, marker) -> None:
    """Keep the real content (so only the payload can make it fail), add the payload, save as DeepSpeed does."""
    real = load_deepspeed_file(str(path), map_location="cpu")
    real["evil"] = Payload(str(marker))
    torch.save(real, path)


def _poison_trainer_state(tag_dir, marker) -> None:
    plant(ckpt.rank_state_path(tag_dir, 0), marker)


def _legacy_trainer_state(tag_dir, marker) -> None:
    ckpt.rank_state_path(tag_dir, 0).unlink()
    plant(ckpt.legacy_rank_state_path(tag_dir, 0), marker, {"step": 1, "position": 1})


CASES = {
    # kind: (ZeRO stage of the run, file name, how to poison it, what the one error line says)
    "model_states": (2, "mp_rank_00_model_states.pt", "deepspeed", "refused: it asks for exec"),
    "model_states_with_optimizer": (0, "mp_rank_00_model_states.pt", "deepspeed", "refused: it asks for exec"),
    "optimizer_states": (2, "zero_pp_rank_0_mp_rank_00_optim_states.pt", "deepspeed", "refused: it asks for exec"),
    "trainer_state": (2, "trainer_state_rank0.safetensors", "trainer", "not a trainer state file"),
    "legacy_trainer_state": (2, "trainer_state_rank0.pt", "legacy", "old pickle format is never loaded"),
}


def test_cases_cover_every_file_a_checkpoint_holds(runs) -> None:
    for zero, run in runs.items():
        names = {p.name for p in (run / "checkpoints" / TAG).iterdir()} - {ckpt.MARKER}
        covered = {c[1] for c in CASES.values()}
        assert names <= covered, f"ZeRO {zero}: files without a poisoning case: {names - covered}"


@pytest.mark.parametrize("kind", sorted(CASES))
def test_poisoned_and_rehashed_checkpoint_is_refused_and_never_runs_code(runs, tmp_path, kind) -> None:
    zero, name, how, expected = CASES[kind]
    out = tmp_path / "run"
    shutil.copytree(runs[zero], out)
    tag_dir = out / "checkpoints" / TAG
    marker = tmp_path / "PWNED"
    if how == "deepspeed":
        _poison_deepspeed_file(tag_dir / name, marker)
    elif how == "trainer":
        _poison_trainer_state(tag_dir, marker)
    else:
        _legacy_trainer_state(tag_dir, marker)
    ckpt.write_marker(tag_dir, 1)                      # the attacker re-hashes COMPLETE.json
    assert ckpt.verify(tag_dir) is None                # so the checksums no longer protect anything

    res = run_train(out, "--max-steps", "2", "--set", "tracking.enabled=false", "--set", "export=false",
                    "--set", f"deepspeed.zero_stage={zero}", "--resume", "latest", check=False)
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, res.stderr[-3000:]
    assert str(tag_dir / name) in errors[0] and expected in errors[0], errors[0]
    assert "Traceback" not in res.stderr
    assert not marker.exists(), "the payload ran"
    assert not (out / "checkpoints" / ckpt.tag_for(2)).exists()   # no training on a refused checkpoint
