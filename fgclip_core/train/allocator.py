"""Which C allocator a CPU run uses, and how to start a process with tcmalloc.

PyTorch has a caching allocator for CUDA but none for the CPU: every CPU tensor is a ``malloc`` and
a ``free``. glibc hands every block of 32 MB or more straight back to the kernel on ``free``, so a
buffer of that size allocated once per step is faulted in again, 4 KB page by 4 KB page, on every
step. DeepSpeed's ZeRO optimizer allocates several parameter-sized buffers per step (the flattened
gradients, their fp64 copy for the norm); on ViT-B-16 in fp32 that is about 1.2 s of page faults per
step on our 2-core VM. tcmalloc keeps freed spans for reuse, which is what Intel's and PyTorch's CPU
performance guides recommend for training; with ``TCMALLOC_RELEASE_RATE=0`` it never hands them back, so
a training loop in steady state takes no page faults at all (measured: 0 per step on ViT-B-16, where
glibc took ~300,000 per plain step and ~500,000 per DeepSpeed ZeRO-2 step).

The allocator has to be chosen before the process starts (``LD_PRELOAD``), so this module only finds
the library and builds the environment for a child process; ``loaded_allocator()`` reports what the
current process runs with (logged as a run tag by the trainer, printed by the benchmarks).
``preload_changes(env)`` tells a caller whether a process started with ``env`` would run with another
preload than this one (only then is there a reason to start one).
"""

from __future__ import annotations

import ctypes.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

CpuAllocator = Literal["system", "tcmalloc", "auto"]
CPU_ALLOCATORS: tuple[str, ...] = get_args(CpuAllocator)   # the choices the CLI, benchmarks and Dagster offer

# what the Debian/Ubuntu package ``libtcmalloc-minimal4`` (or gperftools) installs
_SEARCH = ("tcmalloc_minimal", "tcmalloc")
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
INSTALL_HINT = "install it with `make cpu-allocator` (apt package libtcmalloc-minimal4) or set FGCLIP_TCMALLOC=/path/to/so"


def find_tcmalloc() -> Path | None:
    """Path of a tcmalloc shared library: ``$FGCLIP_TCMALLOC`` if set (must exist), else the usual places."""
    explicit = os.environ.get("FGCLIP_TCMALLOC")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"FGCLIP_TCMALLOC={explicit!r} is not a file")
        return path
    for stem in _SEARCH:
        for d in _LIB_DIRS:
            for path in sorted(Path(d).glob(f"lib{stem}.so*")):
                if path.is_file():
                    return path
        name = ctypes.util.find_library(stem)
        if name and Path(name).is_absolute() and Path(name).is_file():
            return Path(name)
    return None


def loaded_allocator(maps: str | None = None) -> str:
    """``tcmalloc`` / ``jemalloc`` / ``mimalloc`` when one is mapped into this process, else ``system``."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return "unknown"
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if f"lib{name}" in maps:
            return name
    return "system"


def allocator_env(kind: CpuAllocator, env: Mapping[str, str] | None = None) -> tuple[dict[str, str], str]:
    """The environment for a child process that should run with ``kind``, and the allocator it gets.

    ``system`` removes a tcmalloc preload inherited from this process; ``tcmalloc`` raises if the library
    is missing (naming how to install it); ``auto`` is tcmalloc when installed, else the system allocator
    (the second return value says which, so callers print it).
    """
    out = dict(os.environ if env is None else env)
    preload = [p for p in out.get("LD_PRELOAD", "").split(":") if p and "tcmalloc" not in Path(p).name]
    if kind == "system":
        chosen = "system"
    else:
        lib = find_tcmalloc()
        if lib is None:
            if kind == "tcmalloc":
                raise FileNotFoundError(f"tcmalloc requested but not found; {INSTALL_HINT}")
            chosen = "system"
        else:
            preload.insert(0, str(lib))
            chosen = "tcmalloc"
            # keep freed pages for reuse instead of handing them back to the kernel bit by bit (which faults them
            # in again: a training step frees and reallocates the same sizes every step), like CUDA's caching
            # allocator; and no report for every allocation over 1 GiB (ViT-L's flat buffers are larger)
            out.setdefault("TCMALLOC_RELEASE_RATE", "0")
            out.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    if preload:
        out["LD_PRELOAD"] = ":".join(preload)
    else:
        out.pop("LD_PRELOAD", None)
    return out, chosen


def preload_changes(env: Mapping[str, str]) -> bool:
    """Whether ``env`` preloads other libraries than this process was started with."""
    return env.get("LD_PRELOAD", "") != os.environ.get("LD_PRELOAD", "")
