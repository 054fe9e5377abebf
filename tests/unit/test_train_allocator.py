"""Choosing the C allocator of CPU training processes (fgclip_core/train/allocator.py)."""

from __future__ import annotations

import pytest

from fgclip_core.train.allocator import allocator_env, find_tcmalloc, loaded_allocator


def test_loaded_allocator_reads_the_process_maps() -> None:
    assert loaded_allocator("7f00 r-xp /usr/lib/x86_64-linux-gnu/libc.so.6\n") == "system"
    assert loaded_allocator("7f00 r-xp /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n") == "tcmalloc"
    assert loaded_allocator("7f00 r-xp /opt/lib/libjemalloc.so.2\n") == "jemalloc"
    assert loaded_allocator() in {"system", "tcmalloc", "jemalloc", "mimalloc"}


def test_tcmalloc_is_preloaded_first_and_other_preloads_kept(tmp_path, monkeypatch) -> None:
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.write_bytes(b"")
    monkeypatch.setenv("FGCLIP_TCMALLOC", str(lib))
    env, chosen = allocator_env("tcmalloc", {"LD_PRELOAD": "/x/libfoo.so", "PATH": "/bin"})
    assert chosen == "tcmalloc"
    assert env["LD_PRELOAD"] == f"{lib}:/x/libfoo.so"
    assert env["PATH"] == "/bin" and env["TCMALLOC_RELEASE_RATE"] == "0"
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 32
    env2, chosen2 = allocator_env("auto", env)   # already preloaded: not added twice
    assert chosen2 == "tcmalloc" and env2["LD_PRELOAD"] == env["LD_PRELOAD"]


def test_system_removes_an_inherited_tcmalloc_preload() -> None:
    env, chosen = allocator_env("system", {"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4:/x/libfoo.so"})
    assert chosen == "system" and env["LD_PRELOAD"] == "/x/libfoo.so"
    env, _ = allocator_env("system", {"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"})
    assert "LD_PRELOAD" not in env


def test_missing_tcmalloc_is_an_error_when_asked_for_and_system_on_auto(monkeypatch) -> None:
    import fgclip_core.train.allocator as alloc

    monkeypatch.delenv("FGCLIP_TCMALLOC", raising=False)
    monkeypatch.setattr(alloc, "find_tcmalloc", lambda: None)
    with pytest.raises(FileNotFoundError, match="make cpu-allocator"):
        allocator_env("tcmalloc", {})
    env, chosen = allocator_env("auto", {})
    assert chosen == "system" and "LD_PRELOAD" not in env


def test_a_wrong_explicit_path_is_named(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FGCLIP_TCMALLOC", str(tmp_path / "nope.so"))
    with pytest.raises(FileNotFoundError, match=r"nope\.so"):
        find_tcmalloc()


def test_a_restart_is_needed_only_when_the_preload_changes(monkeypatch) -> None:
    from fgclip_core.train.allocator import preload_changes

    monkeypatch.setenv("LD_PRELOAD", "/opt/lib/libjemalloc.so.2")
    env, chosen = allocator_env("system")   # keeps a preload that is not tcmalloc: nothing to restart for
    assert chosen == "system" and not preload_changes(env)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libtcmalloc_minimal.so.4")
    assert preload_changes(allocator_env("system")[0])
