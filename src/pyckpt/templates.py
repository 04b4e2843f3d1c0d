"""Templates: many fresh copies of one image, each in its own PID namespace.

    with pyckpt.template("img", new_netns=True) as t:
        a = t.copy()          # a psutil.Process: the image's root, in a new PID namespace
        b = t.copy()          # another one beside it
        ...
        t.kill(a)             # end one copy (its namespace's init is killed and reaped)
    # close(): every copy still running is ended, and the template

What a copy costs: the image is restored once, when the template is made,
into a stopped process that never runs (fastcopy.py); each copy is forked
from it, pages shared copy-on-write until written, and given what a fork
does not carry over (its own file descriptions, threads, timers, pending
signals, registers) by the restore's own steps; in a process tree, the
processes below the root are restored whole below it.  Where the image has
what that path does not handle yet (SysV IPC, a memfd mapped private...),
`t.fast` is False, `t.reason` says why, and each copy is a full
`restore(path, new_pidns=True, **options)` instead; an option given to one
`copy()` that path does not take (tcp_established) makes that copy a full
restore, and `t.copy_reason` says why.  `t.last_copy` holds
the last copy's step times.  The figures are in bench/harness.py's output
and the README ("Testing with pyckpt").

A copy's parent is its namespace's init, a child of the process that called
`copy()`: killing that init ends every process of the copy.  `kill(p)` and
`close()` do that and reap it.  A fast copy's init dies when the caller's
process dies (it polls a pidfd of it), and so does the template; a full
restore's init does not (the pytest plugin's watchdog kills those).  Fast
copies are made by ptrace from the thread that made the template: call
`copy()` from that thread (another thread gets full restores).  The
template itself belongs to that thread (ptrace, parent-death signal): when
the thread ends, so does the template — the copies still running go on, and
later copies are full restores.
"""

from __future__ import annotations

import os
import signal

from .errors import PyckptError


class Template:
    """Fresh copies of the image at `path` (see the module docstring)."""

    def __init__(self, path, **restore_options):
        from . import open_image

        for fixed in ("new_pidns",):
            if fixed in restore_options:
                raise TypeError(f"template(): {fixed} is always True for a template's copies")
        self.path = os.fspath(path)
        self.options = restore_options
        self.image = open_image(self.path)  # a damaged image: ImageError now, not at the first copy
        self._inits: dict[int, int] = {}  # copy's root PID -> its namespace's init
        self._pidfds: dict[int, int] = {}  # copy's root PID -> a pidfd of that init (kill() signals it)
        self.closed = False
        self.last_copy = None  # fastcopy.CopyStats of the last fast copy
        self.copy_reason: str | None = None  # why the last copy was a full restore, if it was
        self._fast = None
        self.reason: str | None = None  # why copies are full restores (None: they are fast)
        from .fastcopy import FastTemplate, NotFast

        try:
            self._fast = FastTemplate(self.path, _options(restore_options),
                                      _progress(restore_options.get("progress")))
        except NotFast as e:
            self.reason = str(e)
        except PyckptError as e:  # e.g. a file of the image changed: full restores say it per copy
            if type(e).__name__ == "InternalError":  # a bug: not hidden behind slow copies
                raise
            self.reason = f"the template could not be made ({type(e).__name__}: {str(e).splitlines()[0]})"

    @property
    def pid(self) -> int | None:
        """The template process copies are forked from (stopped, traced by pyckpt); None
        when copies are full restores."""
        return self._fast.pid if self._fast is not None else None

    @property
    def fast(self) -> bool:
        """Whether copies are forked from the restored template (else full restores, see `reason`)."""
        return self._fast is not None

    def copy(self, **restore_options):
        """A new running copy: a `psutil.Process` (its parent is its namespace's init).
        Keywords given here are added to the template's restore options for this copy
        (e.g. `fds=` for its own log)."""
        from . import restore

        if self.closed:
            raise PyckptError(f"the template of {self.path} is closed")
        if self._fast is not None:
            import psutil

            from .fastcopy import CopyStats, NotFast

            stats = CopyStats()
            self.copy_reason = None
            try:
                root, init, pidfd = self._fast.copy(_options({**self.options, **restore_options}), stats)
            except NotFast as e:
                self.copy_reason = str(e)  # a full restore below
                if e.for_good:
                    self._fast, self.reason = None, str(e)
            else:
                self.last_copy = stats
                self._inits[root] = init
                self._pidfds[root] = pidfd
                proc = psutil.Process(root)
                proc.restore_warnings = list(stats.warnings)
                return proc
        proc = restore(self.path, new_pidns=True, **{**self.options, **restore_options})
        init = self._inits[proc.pid] = proc.ppid()
        pidfd = os.pidfd_open(init)
        if proc.ppid() == init:  # (the root still there, a child of that init: the pidfd is its)
            self._pidfds[proc.pid] = pidfd
        else:
            os.close(pidfd)
        return proc

    def init_of(self, proc) -> int:
        """The PID of the namespace init of a copy this template made."""
        return self._inits[getattr(proc, "pid", proc)]

    def kill(self, proc) -> None:
        """End a copy: SIGKILL its namespace's init (every process of the copy dies with
        it) and reap it.  Through a pidfd of the init: if it was reaped already (SIGCHLD
        ignored, a wait() elsewhere), its PID may be another process's by now."""
        key = getattr(proc, "pid", proc)
        init = self._inits.pop(key, None)
        pidfd = self._pidfds.pop(key, None)
        if init is None or pidfd is None:
            return
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        except ChildProcessError:
            pass
        finally:
            os.close(pidfd)

    def close(self) -> None:
        """End every copy still running."""
        for pid in list(self._inits):
            self.kill(pid)
        if self._fast is not None:
            self._fast.close()
        self.closed = True

    def __enter__(self) -> "Template":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        how = "fast" if self.fast else f"full restores: {self.reason}"
        return f"<pyckpt.Template {self.path} copies={len(self._inits)} {how}>"


def _options(kw: dict):
    """restore()'s keywords as RestoreOptions (new_pidns is the template's own)."""
    from . import _restore_options

    kw = {k: v for k, v in kw.items() if k != "progress"}
    known = ("fds", "inherit_stdio", "allow_changed_files", "deleted_dir", "new_netns", "trust_image",
             "shell_job", "tcp_established")
    unknown = sorted(set(kw) - set(known))
    if unknown:
        raise TypeError(f"template(): unexpected keyword {unknown[0]!r}")
    return _restore_options(kw.get("fds"), kw.get("inherit_stdio", False), kw.get("allow_changed_files", False),
                            kw.get("deleted_dir"), False, kw.get("new_netns", False), kw.get("trust_image", False),
                            kw.get("shell_job", False), kw.get("tcp_established", False))


def _progress(progress):
    from . import _progress as as_progress

    return as_progress(False if progress is None else progress)

