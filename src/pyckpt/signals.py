"""pyckpt's own handling of SIGINT/SIGTERM while it holds a process.

Being interrupted at an arbitrary point of an injection would leave the
target with foreign registers, a stray scratch page or a half-built address
space.  While a dump or restore runs (in the main thread), SIGINT, SIGTERM,
SIGHUP and SIGQUIT are only *noted*; `checkpoint()` — called between
injected calls, page chunks and stages — turns a noted signal into
KeyboardInterrupt at a point where every bookkeeping step is complete, so the
`finally` blocks that cure, detach or remove a half-made process always have
the full picture.

No noted signal is ever dropped while the work can still be undone: the
work ends with `commit()`, the last checkpoint, taken once the result is
complete (for a dump: the image finished on disk, before the target is
killed).  A signal noted after it lets the result stand; the block records
it (`Deferral.late`) and hands it to an enclosing `deferred_signals()` block
if there is one, so a caller that wraps the call can still tell.
"""

from __future__ import annotations

import _signal
import _thread
import contextlib
import sys

# (_signal and _thread, not signal and threading: the same calls, with numbers where
# signal gives enums, and not their imports — enum conversions, a thread registry:
# ~1.5 ms of every command's start-up)
signal = _signal

# Signals whose default action would kill pyckpt in the middle of its work
DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# The main thread (the only one that may set handlers): threading's, when it is loaded
# (it knows it whichever thread imports this), else this one: no thread was started
# through threading, and pyckpt starts none otherwise.
_MAIN = sys.modules["threading"].main_thread().ident if "threading" in sys.modules else _thread.get_ident()


class Deferral:
    """One active `deferred_signals()` block."""

    def __init__(self) -> None:
        self.noted: list[int] = []  # every signal noted, in order of arrival
        self.raised = 0  # how many of `noted` a checkpoint has turned into KeyboardInterrupt
        self.complete = False  # commit() passed: the result stands, no checkpoint raises
        self.late: list[int] = []  # on leaving the block: noted and never raised
        self.handled: set[int] = set()  # the signals this block notes
        # Set it to leave the signals ignored when the block ends instead of putting the
        # old handlers back: for a program that has reported its outcome and only exits
        # (a handler put back could still kill it, in any of its threads, on the way out).
        self.ignore_after = False

    @property
    def pending(self) -> list[int]:
        return self.noted[self.raised:]


_stack: list[Deferral] = []  # the active blocks of the main thread, innermost last


@contextlib.contextmanager
def deferred_signals():
    """Note SIGINT/SIGTERM/SIGHUP/SIGQUIT instead of acting on them (main thread only).

    Yields the `Deferral`.  Blocks nest: an inner block's late signals are
    handed to the outer one, whose own checkpoints then act on them.
    """
    d = Deferral()
    if _thread.get_ident() != _MAIN:  # handlers can only be set (and run) in the main thread
        yield d
        return

    def note(signum, frame):
        d.noted.append(signum)

    old: dict[int, object] = {}
    try:
        with blocked():  # nothing arrives half-way through installing the handlers
            for sig in DEFERRED:
                current = signal.getsignal(sig)
                # nohup'ed stays immune; a handler not set from Python cannot be put back
                if current != signal.SIG_IGN and current is not None:
                    old[sig] = signal.signal(sig, note)
                    d.handled.add(sig)
            _stack.append(d)
        checkpoint()  # a signal noted by an enclosing block before this one began
        yield d
    finally:
        with blocked():  # a signal from here on goes to the restored handlers, after the block
            if d in _stack:
                _stack.remove(d)
            d.late = d.pending
            d.raised = len(d.noted)
            if d.late and _stack:
                _stack[-1].noted += d.late
            _restore(dict.fromkeys(old, signal.SIG_IGN) if d.ignore_after else old)


def _restore(old: dict) -> None:
    error = None
    for sig, handler in old.items():
        try:
            signal.signal(sig, handler)
        except BaseException as e:  # put every other handler back all the same
            error = error or e
    if error is not None:
        raise error


def checkpoint() -> None:
    """Raise KeyboardInterrupt if SIGINT/SIGTERM arrived; call only where stopping is safe.

    Signals noted by enclosing blocks count too (up to the first complete one).
    """
    if not _stack or _thread.get_ident() != _MAIN:
        return
    live = []
    for d in reversed(_stack):
        if d.complete:
            break
        live.append(d)
    pending = [sig for d in live for sig in d.pending]
    if pending:
        for d in live:
            d.raised = len(d.noted)
        raise KeyboardInterrupt(f"signal {_name(pending[0])}")


def commit(*, interrupt: bool = True) -> None:
    """The last checkpoint: the work is complete.

    Raises KeyboardInterrupt for any signal that arrived until now — also one
    whose Python handler has not run yet; from here on no checkpoint of the
    innermost block raises, and a signal lets the result stand (`Deferral.late`).

    `interrupt=False` raises nothing: the result stood already — a nested block
    committed it (the dump a command wraps) — so what arrived since is late too,
    and stays in `pending` (then `late`) for the caller to report.
    """
    if not _stack or _thread.get_ident() != _MAIN:
        return
    d = _stack[-1]
    # Blocking runs the handlers of signals already delivered (pthread_sigmask
    # checks for them) and holds new ones off until `complete` is set; one sent
    # while the caller had them blocked is still queued: take it too.
    with blocked():
        while d.handled and (info := signal.sigtimedwait(d.handled, 0)) is not None:
            d.noted.append(info.si_signo)
        if interrupt:
            checkpoint()
        d.complete = True


def _name(signum: int) -> str:
    import signal as named  # (its enum of names: for a message, not at start-up)

    try:
        return named.Signals(signum).name
    except ValueError:
        return str(signum)


@contextlib.contextmanager
def blocked():
    """Hold the deferred signals off for a short critical section (cure, kill).

    Leaving runs the handlers of what arrived meanwhile.
    """
    # Read the mask first: pthread_sigmask runs pending handlers after changing the
    # mask, and one that raised there would leave the signals blocked for good.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
