"""Progress display for long dumps and restores (tqdm, shown on a terminal only).

Nothing is drawn unless stderr is a terminal and the work lasts more than
about a second (tqdm's `delay`).  Sizes and rates are in the same binary
units (B, KiB, MiB, GiB): tqdm's own would print sizes divided by 1024 as
"300M/1.00G" beside a rate divided by 1000 as "105MB/s".

tqdm is imported only when a bar may be drawn: without a terminal (scripts,
tests, `$(pyckpt restore ...)`) a bar is a `_NoBar` that only keeps the
safe points for a pending interrupt, and tqdm's import (its version lookup
through importlib.metadata, its multiprocessing lock: ~40 ms) is never paid.
"""

from __future__ import annotations

import sys

from .signals import checkpoint

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {done}/{whole} [{elapsed}<{remaining}, {speed}]"
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def binary_size(n: float) -> str:
    """`n` bytes in binary units with three significant digits: '512 B', '1.50 KiB', '300 MiB'."""
    unit = _UNITS[0]
    for unit in _UNITS:
        if abs(n) < 999.5 or unit == _UNITS[-1]:
            break
        n /= 1024
    if unit == "B":
        return f"{n:.0f} B"
    digits = 2 if abs(n) < 9.995 else 1 if abs(n) < 99.95 else 0
    return f"{n:.{digits}f} {unit}"


class _NoBar:
    """A bar that draws nothing: its updates are only safe points for a pending interrupt."""

    def update(self, n=1):
        checkpoint()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass


def _bar_class():
    from tqdm import tqdm

    class _Bar(tqdm):
        """A tqdm bar whose updates are also safe points for a pending interrupt."""

        def update(self, n=1):
            checkpoint()
            return super().update(n)

        @property
        def format_dict(self):
            d = super().format_dict
            rate = d.get("rate")
            if rate is None and d.get("elapsed"):
                rate = (d["n"] - (d.get("initial") or 0)) / d["elapsed"]
            d["done"] = binary_size(d["n"] or 0)
            d["whole"] = "?" if d.get("total") is None else binary_size(d["total"])
            d["speed"] = binary_size(rate) + "/s" if rate else "? B/s"
            return d

    return _Bar


class Progress:
    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def bar(self, total: int, desc: str):
        if not self.enabled:
            return _NoBar()
        return _bar_class()(
            total=total,
            desc=desc,
            unit="B",
            bar_format=BAR_FORMAT,
            delay=1.0,
            leave=False,
            file=sys.stderr,
        )
