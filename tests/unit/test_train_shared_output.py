"""The one line that stops every rank when some cannot see the run folder rank 0 writes (the collective
check with two real processes: tests/integration/test_train_shared_output.py)."""

from __future__ import annotations

from pathlib import Path

from fgclip_core.train.shared_output import unshared_message


def test_message_names_only_the_blind_ranks() -> None:
    assert unshared_message(Path("/r"), [(0, "a", True), (1, "b", True)]) is None
    msg = unshared_message(Path("/r"), [(0, "a", True), (1, "b", False), (2, "c", False)])
    assert msg is not None and "rank 1 on b, rank 2 on c" in msg and "rank 0 on" not in msg
