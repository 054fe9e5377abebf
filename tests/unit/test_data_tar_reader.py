"""The loader's fast tar reader gives exactly what tarfile gives: same members and bytes, and the same
error at the same point, on good, truncated, corrupted, pax and GNU tars."""

from __future__ import annotations

import io
import random
import tarfile

import fsspec
import pytest

from fgclip_core.data.tar_read import _fast_members, _tar_members, _tarfile_members


def _tar(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT, dirs: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=fmt) as t:
        if dirs:
            info = tarfile.TarInfo("sub")
            info.type = tarfile.DIRTYPE
            t.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _outcome(gen):
    out = []
    try:
        for name, data in gen:
            out.append((name, data))
    except Exception as e:  # the error and where it came are part of the contract
        return out, type(e).__name__
    return out, None


def _compare(tmp_path, data: bytes) -> None:
    p = tmp_path / "x.tar"
    p.write_bytes(data)
    fs = fsspec.filesystem("file")
    assert _outcome(_tar_members(fs, str(p))) == _outcome(_tarfile_members(fs, str(p)))


MEMBERS = [(f"k{i:03d}.{ext}", bytes(random.Random(i).randbytes(n))) for i, (ext, n) in
           enumerate([("jpg", 700), ("json", 512), ("tok.npy", 0), ("jpg", 1), ("json", 1500)])]


def test_plain_shards_take_the_fast_path(tmp_path):
    data = _tar(MEMBERS)
    assert list(_fast_members(io.BytesIO(data))) == MEMBERS
    _compare(tmp_path, data)
    _compare(tmp_path, _tar(MEMBERS, dirs=True))
    _compare(tmp_path, _tar([("a/b/" + "d" * 120 + "/k.jpg", b"xy")] + MEMBERS, fmt=tarfile.USTAR_FORMAT))  # prefix field


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_names_fall_back_to_tarfile(tmp_path, fmt):
    _compare(tmp_path, _tar([*MEMBERS[:2], ("n" * 150 + ".jpg", b"abc"), *MEMBERS[2:]], fmt=fmt))


def test_truncated_and_corrupted_tars_behave_as_tarfile(tmp_path):
    data = _tar(MEMBERS)
    rng = random.Random(0)
    cuts = sorted({0, 1, 511, 512, 513, 1024, 1536, len(data) - 1024, len(data) - 1} | {rng.randrange(len(data)) for _ in range(40)})
    for cut in cuts:
        _compare(tmp_path, data[:cut])
    for _ in range(60):
        bad = bytearray(data)
        i = rng.randrange(len(bad))
        bad[i] ^= 1 << rng.randrange(8)
        _compare(tmp_path, bytes(bad))
    _compare(tmp_path, b"this is not a tar file at all" * 30)
    _compare(tmp_path, bytes(2048))
