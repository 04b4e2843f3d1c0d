"""Progress display for long dumps and restores (tqdm, shown on a terminal only).

Nothing is drawn unless stderr is a terminal and the work lasts more than
about a second (tqdm's `delay`).
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from .signals import checkpoint


class _Bar(tqdm):
    """A tqdm bar whose updates are also safe points for a pending interrupt."""

    def update(self, n=1):
        checkpoint()
        return super().update(n)


class Progress:
    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def bar(self, total: int, desc: str):
        return _Bar(
            total=total,
            desc=desc,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            delay=1.0,
            leave=False,
            disable=not self.enabled,
            file=sys.stderr,
        )
