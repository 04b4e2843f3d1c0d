"""Progress display for long dumps and restores (tqdm, shown on a terminal only).

Nothing is drawn unless stderr is a terminal and the work lasts more than
about a second (tqdm's `delay`).
"""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def bar(self, total: int, desc: str):
        return tqdm(
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
