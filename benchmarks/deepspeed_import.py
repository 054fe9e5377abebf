"""Start-up cost of a training rank: ``import deepspeed`` as ``fgclip_core.train.deepspeed_import.load_deepspeed``
does it (DeepSpeed's autotuner kept from importing MLflow) against a plain ``import deepspeed``, each in a
fresh interpreter with torch already imported, alternating, median of ``--runs`` pairs.

Prints the plain / ours ratio of the DeepSpeed import alone (target >= 2) and of the whole start-up."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

PROBE = """
import time
import torch
t0 = time.perf_counter()
{how}
t1 = time.perf_counter()
print(t1 - t0)
"""
PLAIN = "import deepspeed"
OURS = "from fgclip_core.train.deepspeed_import import load_deepspeed; load_deepspeed()"


def timed(how: str) -> tuple[float, float]:
    """(seconds of the import itself, seconds of the whole interpreter run)."""
    import time

    env = {**os.environ, "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR") or "cpu"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE.format(how=how)], capture_output=True, text=True, env=env,
                         check=True)
    total = time.perf_counter() - t0
    return float(out.stdout.strip().splitlines()[-1]), total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    plain, ours = [], []
    timed(PLAIN)  # warm the file cache for both
    for _ in range(args.runs):
        plain.append(timed(PLAIN))
        ours.append(timed(OURS))
    p_imp, o_imp = statistics.median(x for x, _ in plain), statistics.median(x for x, _ in ours)
    p_all, o_all = statistics.median(t for _, t in plain), statistics.median(t for _, t in ours)
    print(f"import deepspeed: plain {p_imp:.2f} s, load_deepspeed {o_imp:.2f} s -> ratio {p_imp / o_imp:.2f} "
          f"(target >= 2)")
    print(f"whole start-up (torch + deepspeed): plain {p_all:.2f} s, ours {o_all:.2f} s -> ratio {p_all / o_all:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
