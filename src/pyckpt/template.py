"""Templates: many fresh copies of one image, each in its own PID namespace.

    with pyckpt.template("img", new_netns=True) as t:
        a = t.copy()          # a psutil.Process: the image's root, in a new PID namespace
        b = t.copy()          # another one beside it
        ...
        t.kill(a)             # end one copy (its namespace's init is killed and reaped)
    # close(): every copy still running is ended

What a copy costs now: `copy()` is a full `restore(path, new_pidns=True,
**options)` each time (the image is opened, validated and its pages read
again, into memory of the copy's own: nothing is shared between copies).
The API is the one fast copies will have (the template restored once and
each copy made from it copy-on-write, see issue 12); the figures are in
bench/harness.py's output and the README ("Testing with pyckpt").

A copy's parent is its namespace's init, a child of the process that called
`copy()`: killing that init ends every process of the copy.  `kill(p)` and
`close()` do that and reap it.  Copies do not outlive the caller when it is
killed only if something kills their inits then (the pytest plugin's
watchdog does); `close()` is the normal way.
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
        self.closed = False

    def copy(self, **restore_options):
        """A new running copy: a `psutil.Process` (its parent is its namespace's init).
        Keywords given here are added to the template's restore options for this copy
        (e.g. `fds=` for its own log)."""
        from . import restore

        if self.closed:
            raise PyckptError(f"the template of {self.path} is closed")
        proc = restore(self.path, new_pidns=True, **{**self.options, **restore_options})
        self._inits[proc.pid] = proc.ppid()
        return proc

    def init_of(self, proc) -> int:
        """The PID of the namespace init of a copy this template made."""
        return self._inits[getattr(proc, "pid", proc)]

    def kill(self, proc) -> None:
        """End a copy: SIGKILL its namespace's init (every process of the copy dies with
        it) and reap it."""
        init = self._inits.pop(getattr(proc, "pid", proc), None)
        if init is None:
            return
        try:
            os.kill(init, signal.SIGKILL)  # our child, not reaped yet
        except ProcessLookupError:
            pass
        try:
            os.waitpid(init, 0)
        except ChildProcessError:
            pass

    def close(self) -> None:
        """End every copy still running."""
        for pid in list(self._inits):
            self.kill(pid)
        self.closed = True

    def __enter__(self) -> "Template":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pyckpt.Template {self.path} copies={len(self._inits)}>"

