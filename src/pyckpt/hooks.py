"""Functions a Python target runs around a dump and after each restore of it.

Copies restored from one image are alike to the byte: the same `random`
state, the same secrets, connections to the same peers.  A target that
imports this module can register what makes each copy its own::

    import random, secrets
    import pyckpt.hooks

    @pyckpt.hooks.after_restore
    def new_identity():
        random.seed()                       # re-seeded from os.urandom
        global TOKEN
        TOKEN = secrets.token_hex(16)

    @pyckpt.hooks.before_dump
    def quiesce():
        db.commit()

How they are triggered: registering the first function of a kind installs a
signal handler in the target (it must be done in the main thread, as any
`signal.signal`): `AFTER_RESTORE_SIGNAL` (SIGRTMIN+6) runs the
`after_restore` functions, `BEFORE_DUMP_SIGNAL` (SIGRTMIN+7) the
`before_dump` ones, in the order registered, in the target's main thread (a
Python signal handler runs there, between two bytecodes; the signal is sent
to the main thread itself, so a blocking call there is interrupted and
retried after the handler).  A function that raises does not stop the others.
When all have run, the target writes an acknowledgement file,
`/tmp/pyckpt-hooks.<PID>.<kind>` (PID: its PID as the sender sees it, the
first NSpid entry; written whole through a rename), "ok" or the failures.

`trigger(pid, kind)` is the sender's side: it sees in /proc/PID/status
(SigCgt) whether the process has the handler (else it returns None: nothing
registered), sends the signal and waits for the acknowledgement.  The pytest
plugin (`pyckpt.pytest`) triggers `before_dump` before it dumps a snapshot's
process (with a timeout: the dump goes on if they fail or hang, with a
warning saying so) and `after_restore` in each copy before the test gets it.
`pyckpt.dump()` and `pyckpt.restore()` themselves trigger nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
import traceback

AFTER_RESTORE_SIGNAL = signal.SIGRTMIN + 6
BEFORE_DUMP_SIGNAL = signal.SIGRTMIN + 7
KINDS = {"after_restore": AFTER_RESTORE_SIGNAL, "before_dump": BEFORE_DUMP_SIGNAL}

_registered: dict[str, list] = {"after_restore": [], "before_dump": []}


def after_restore(fn):
    """Decorator: run `fn()` in each restored copy (see the module docstring)."""
    return _register("after_restore", fn)


def before_dump(fn):
    """Decorator: run `fn()` before the process is dumped (see the module docstring)."""
    return _register("before_dump", fn)


def _register(kind: str, fn):
    if not callable(fn):
        raise TypeError(f"pyckpt.hooks.{kind}: a function is needed, not {type(fn).__name__}")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"pyckpt.hooks.{kind} must be used in the main thread "
                           "(it installs a signal handler)")
    sig = KINDS[kind]
    if signal.getsignal(sig) is not _HANDLERS[kind]:
        signal.signal(sig, _HANDLERS[kind])
    _registered[kind].append(fn)
    return fn


def ack_path(pid: int, kind: str) -> str:
    return f"/tmp/pyckpt-hooks.{pid}.{kind}"


def _outer_pid() -> int:
    """This process's PID in the outermost PID namespace /proc shows (NSpid's first)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return os.getpid()


def _run(kind: str) -> None:
    failures = []
    for fn in list(_registered[kind]):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported to the sender, the others still run
            name = getattr(fn, "__qualname__", repr(fn))
            failures.append(f"{name}: {type(e).__name__}: {e}")
            traceback.print_exc()
    path = ack_path(_outer_pid(), kind)
    try:
        with open(path + ".tmp", "w") as f:
            f.write("ok\n" if not failures else "failed: " + "; ".join(failures) + "\n")
        os.rename(path + ".tmp", path)
    except OSError:
        pass  # nobody can be told; the sender times out and says so


_HANDLERS = {
    "after_restore": lambda signum, frame: _run("after_restore"),
    "before_dump": lambda signum, frame: _run("before_dump"),
}


def registered(pid: int, kind: str) -> bool:
    """Does process `pid` catch the signal of `kind` (has it registered such hooks)?"""
    sig = KINDS[kind]
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


_libc = ctypes.CDLL(None, use_errno=True)
SYS_tgkill = 234  # x86_64


def trigger(pid: int, kind: str, timeout: float = 10.0) -> str | None:
    """Run the `kind` hooks of process `pid` (a process you started or restored) and
    wait for them: returns None when it registered none, "ok", or "failed: ..." with
    what raised.  Raises TimeoutError when they did not finish within `timeout`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
    if not registered(pid, kind):
        return None
    path = ack_path(pid, kind)
    for stale in (path, path + ".tmp"):
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    # to the main thread (its TID is the PID): Python runs handlers there
    if _libc.syscall(SYS_tgkill, pid, pid, KINDS[kind]) != 0:
        err = ctypes.get_errno()
        raise ProcessLookupError(err, f"cannot signal process {pid} for its {kind} hooks: {os.strerror(err)}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                text = f.read().strip()
            os.unlink(path)
            return text
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {kind} hooks of process {pid} did not finish within {timeout} s")
        time.sleep(0.002)
