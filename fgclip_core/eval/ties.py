"""The tie rule's names and default precision (no torch here: configs import it).

The rule itself is implemented and explained in ``fgclip_core.eval.metrics``.
"""

from __future__ import annotations

from typing import Literal

TieRule = Literal["pessimistic", "optimistic"]
TIE_RULES: tuple[str, ...] = ("pessimistic", "optimistic")
# Absolute, on cosine similarities in [-1, 1]: float32 rounding of inputs that are equal up to
# encoder rounding stays far below it, real score gaps are far above it.
DEFAULT_TIE_TOL = 1e-6
