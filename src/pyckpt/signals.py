"""pyckpt's own handling of SIGINT/SIGTERM while it holds a process.

Being interrupted at an arbitrary point of an injection would leave the
target with foreign registers, a stray scratch page or a half-built address
space.  While a dump or restore runs (in the main thread), SIGINT,
SIGTERM, SIGHUP and SIGQUIT are only *noted*; `checkpoint()` — called between injected calls,
page chunks and stages — turns a noted signal into KeyboardInterrupt at a
point where every bookkeeping step is complete, so the `finally` blocks that
cure, detach or remove a half-made process always have the full picture.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_pending: list[list[int]] = []
# Signals whose default action would kill pyckpt in the middle of its work
DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)  # one list per active deferred_signals() block


@contextlib.contextmanager
def deferred_signals():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []

    def note(signum, frame):
        noted.append(signum)

    old = {}
    for sig in DEFERRED:
        if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup'ed stays immune
            old[sig] = signal.signal(sig, note)
    _pending.append(noted)
    try:
        yield
    finally:
        _pending.pop()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    # A signal noted after the last checkpoint came when the work was done:
    # the result stands (a complete image, a running process).


def checkpoint() -> None:
    """Raise KeyboardInterrupt if SIGINT/SIGTERM arrived; call only where stopping is safe."""
    if _pending and _pending[-1]:
        raise KeyboardInterrupt(f"signal {_pending[-1][0]}")


@contextlib.contextmanager
def blocked():
    """Hold the deferred signals off for a short critical section (cure, kill)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(DEFERRED))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
