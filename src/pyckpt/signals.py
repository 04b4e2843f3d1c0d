"""pyckpt's own handling of SIGINT/SIGTERM while it holds a process.

Being killed in the middle of an injection would leave the target with
foreign registers or a half-built address space.  While a dump or restore
runs (in the main thread), SIGTERM is turned into KeyboardInterrupt like
SIGINT, so the `finally` blocks that cure, detach or remove a half-made
process always run.
"""

from __future__ import annotations

import contextlib
import signal
import threading


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def deferred_signals():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)


@contextlib.contextmanager
def blocked():
    """Hold SIGINT/SIGTERM off for a short critical section (cure, kill)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
