"""``python -m fgclip_core.train.quiet_launch <torchrun args>``: torchrun for ``fgclip train --nproc N``.

The same launcher as ``torchrun`` (``torch.distributed.run``), minus what a user cannot act on when a
worker stops: torchrun re-raises the worker's failure as a ``ChildFailedError`` with its own launcher
traceback and failure table, and logs a warning per sibling it stops. Here the failure becomes the
worker's exit code (the worker has said why, or handed its one-line reason to the parent through
``FGCLIP_WORKER_ERRORS``); with ``FGCLIP_DEBUG=1`` torchrun's own report is kept.
"""

from __future__ import annotations

import logging
import os
import sys


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if os.environ.get("FGCLIP_DEBUG", "") not in ("1", "true", "yes"):
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(parse_args(argv))
    except ChildFailedError as e:
        if os.environ.get("FGCLIP_DEBUG", "") in ("1", "true", "yes"):
            raise
        _, first = e.get_first_failure()
        code = first.exitcode
        return code if 0 < code < 256 else 1   # a signal (negative) or odd code: plain failure
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
