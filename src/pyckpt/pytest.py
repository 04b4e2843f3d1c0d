"""The pytest plugin: a prepared process, snapshotted once, a fresh copy per test.

Registered through the `pytest11` entry point (it is active wherever pyckpt
is installed; it does nothing until a conftest uses it).  In a conftest::

    import sys
    import pyckpt.pytest

    server = pyckpt.pytest.snapshot([sys.executable, "server.py"], ready=r"^READY")

    # test_server.py
    def test_pristine(server):
        with server.connect(8080) as s:
            ...

`snapshot()` defines a fixture (named by the variable it is assigned to).  The
process is started once per test session (stdin /dev/null, stdout and stderr
to a log file, in its own session; PYTHONUNBUFFERED=1 is added to its
environment unless set, and pytest-xdist's PYTEST_XDIST_* variables and
PYTEST_CURRENT_TEST are left out), waited for until it is ready, and dumped with
`kill=True`.  With pytest-xdist the image is built once for all workers (under
an flock in the run's shared temporary directory; the others wait for it).

Ready means: `ready` a string: a line of its output matches the regular
expression (`re.search`); `ready` an int: the process (or one of its children)
listens on that TCP port, seen in /proc/PID/net/tcp{,6} and its fds, without
connecting to it.  It is not ready within `timeout` seconds, or exits first: a
`NotReadyError` naming the argv and the last lines it printed.

Each test gets a fresh `Copy`, made by a `pyckpt.template(image, new_netns=True)`
(forked from the image restored once, pages shared copy-on-write; where the
image has what that does not handle yet, a full restore with `new_pidns=True,
new_netns=True`, and a warning says why once)
(its own PID namespace, where it has the image's PIDs, and its own network
namespace: copies side by side listen on the same ports), and stdout/stderr
(whatever fds held the original's log) going to a log file of its own:
`.pid` (the copy's root process, as this process sees it), `.process` (a
`psutil.Process`), `.connect(port, host="127.0.0.1")` (a connected socket made
in the copy's network namespace), `.netns()` (a context manager: the calling
thread in that namespace), `.log` (its output so far) and `.log_path`.  A test
that fails gets the log of each copy it used attached to its report.
Teardown SIGKILLs the namespace's init (which ends every process of the copy)
and reaps it.  If the target registered `pyckpt.hooks.after_restore`
functions, they are run in the copy before the test gets it; `before_dump`
ones before the dump (a failure or a hang of those is a warning and the dump
goes on).

Copies never outlive the run: a watchdog process (started with the first
copy, in its own session) holds a pidfd of every copy's init and of the
process being prepared, and SIGKILLs them when the pytest process goes away,
even by SIGKILL (its end of a socket pair reads end-of-file).

Errors: the first test to use a snapshot whose build or restore raised a
`PyckptError` gets that error at setup; the later tests using it are skipped
with a reason naming it (one error, not one per test).

Extra keywords of `snapshot()` are passed to every `pyckpt.restore()` (e.g.
`allow_changed_files=True`).

`cache=True` (or a directory) keeps the image across runs, in
$XDG_CACHE_HOME/pyckpt/snapshots (~/.cache/...) or that directory, keyed on
the argv, cwd, environment and `ready`, the kernel release, pyckpt's version,
and the size and mtime of each argv item that is a file (the script): a
change of any of them makes another image.  A cached image that a restore
refuses with `FileChangedError` (a file it holds was changed since),
`ImageError` or `KernelMismatchError` is made again, once, and the copy
restored from the new one.  Without it the image lives in the run's
temporary directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from .errors import FileChangedError, ImageError, KernelMismatchError, NotReadyError, PyckptError

__all__ = ["snapshot", "Copy", "NotReadyError"]

_COPIES = pytest.StashKey[list]()


class Copy:
    """A running copy of a snapshot, for one test (see the module docstring)."""

    def __init__(self, name: str, process, template, log_path: Path):
        self.name = name
        self.process = process
        self.pid = process.pid
        self.init_pid = template.init_of(process)
        self._template = template
        self.log_path = log_path
        self.closed = False

    @property
    def log(self) -> str:
        """The copy's own stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def netns(self):
        """Context manager: the calling thread in the copy's network namespace."""
        from .netns import entered

        return entered(self.pid)

    def connect(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
        """A socket connected to `host:port` inside the copy's network namespace."""
        with self.netns():
            return socket.create_connection((host, port), timeout=timeout)

    def close(self) -> None:
        """SIGKILL the copy's namespace init (ending every process of the copy), reap it."""
        if self.closed:
            return
        self.closed = True
        self._template.kill(self.process)

    def __repr__(self) -> str:
        return f"<pyckpt copy of {self.name} pid={self.pid} init={self.init_pid}>"


class _Spec:
    def __init__(self, argv, ready, cwd, env, timeout, hooks_timeout, restore_options, cache=False):
        self.argv = [os.fspath(a) for a in argv]
        if not self.argv:
            raise ValueError("pyckpt.pytest.snapshot: argv is empty")
        if not isinstance(ready, (str, int)) or isinstance(ready, bool):
            raise TypeError(f"ready must be a regular expression (str) or a TCP port (int), not {ready!r}")
        self.ready = ready
        self.cwd = None if cwd is None else os.fspath(cwd)
        env = dict(os.environ if env is None else env)
        # pytest's and pytest-xdist's own variables differ between workers and tests: the
        # workers would make different images of one process
        env = {k: v for k, v in env.items() if not k.startswith("PYTEST_XDIST_") and k != "PYTEST_CURRENT_TEST"}
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.env = env
        self.timeout = timeout
        self.hooks_timeout = hooks_timeout
        if cache is True:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
            cache = Path(base) / "pyckpt" / "snapshots"
        self.cache = Path(cache) if cache else None
        self.restore_options = restore_options
        # the program's name, or the script's for an interpreter ("python server.py")
        name = Path(self.argv[0]).name
        if re.match(r"(python|node|ruby|perl|bash|sh)[0-9.]*$", name) and len(self.argv) > 1 \
                and not self.argv[1].startswith("-"):
            name = Path(self.argv[1]).name
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "target"
        versions = []
        if self.cache is not None:  # an image kept across runs: also the files it was made from
            from . import __version__

            versions = [os.uname().release, __version__]
            for a in self.argv:
                path = Path(self.cwd or ".") / a
                try:
                    st = path.stat()
                except (OSError, ValueError):
                    continue
                if path.is_file():
                    versions.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
        key = json.dumps([self.argv, self.cwd, sorted(self.env.items()), ready, versions], sort_keys=True)
        self.key = hashlib.sha256(key.encode()).hexdigest()[:16]


def snapshot(argv, ready=r"^READY", cwd=None, env=None, *, timeout: float = 60.0,
             hooks_timeout: float = 10.0, cache=False, **restore_options):
    """Define a fixture: a fresh copy (`Copy`) of the process `argv` once it is ready,
    for each test.  See the module docstring."""
    spec = _Spec(argv, ready, cwd, env, timeout, hooks_timeout, restore_options, cache)

    def copy_fixture(request, _pyckpt_session):
        copy = _pyckpt_session.copy(spec, request)
        try:
            yield copy
        finally:
            copy.close()

    copy_fixture.__doc__ = f"A fresh copy of {spec.argv!r} (pyckpt.pytest.snapshot)."
    return pytest.fixture(copy_fixture)


# --- the session ---------------------------------------------------------------------------

_WATCHDOG = r"""
import os, select, signal, socket, sys
s = socket.socket(fileno=int(sys.argv[1]))
signal.signal(signal.SIGINT, signal.SIG_IGN)
held = {}
poll = select.poll()
poll.register(s, select.POLLIN)
while True:
    for fd, ev in poll.poll():
        if fd != s.fileno():
            poll.unregister(fd); os.close(fd); held.pop(fd, None)
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(s, 16, 64)
        except OSError:
            msg, fds = b"", []
        for f in fds:
            held[f] = True
            poll.register(f, select.POLLIN)
        if not msg:
            for f in held:
                try:
                    signal.pidfd_send_signal(f, signal.SIGKILL)
                except OSError:
                    pass
            sys.exit(0)
"""


class _Watchdog:
    """A process that SIGKILLs every pidfd it was given once this process is gone."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        os.set_inheritable(theirs.fileno(), True)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _WATCHDOG, str(theirs.fileno())], stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),), start_new_session=True)
        finally:
            theirs.close()
        self.sock = ours

    def guard(self, pid: int) -> None:
        """Have `pid` (a child of ours, not reaped) killed should this process die."""
        fd = os.pidfd_open(pid)
        try:
            socket.send_fds(self.sock, [b"+"], [fd])
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()  # end-of-file: it kills what is left (nothing, normally) and exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Session:
    def __init__(self, config, tmp_path_factory):
        self.config = config
        base = tmp_path_factory.getbasetemp()
        worker = getattr(config, "workerinput", None)
        # with pytest-xdist the workers' temporary directories share a parent
        self.shared = (base.parent if worker is not None else base) / "pyckpt-snapshots"
        self.shared.mkdir(exist_ok=True)
        self.logs = base / "pyckpt-copies"
        self.logs.mkdir(exist_ok=True)
        self.images: dict[str, tuple] = {}  # key -> (image path, log fds)
        self.templates: dict = {}  # key -> pyckpt.Template
        self.failed: dict[str, str] = {}  # key -> the error's one-line description
        self.watchdog: _Watchdog | None = None
        self.count = 0

    def close(self) -> None:
        for t in self.templates.values():
            t.close()
        if self.watchdog is not None:
            self.watchdog.close()

    # -- building the image (once per run, shared by the workers) --

    def image(self, spec: _Spec, stale: str | None = None) -> tuple:
        """(image path, the fds of its log, its build token), built if needed; `stale`: the
        token of a cached image a restore refused: built again unless another worker did."""
        import pyckpt
        from .errors import ImageError

        if spec.key in self.images and stale is None:
            return self.images[spec.key]
        home = self.shared if spec.cache is None else spec.cache
        home.mkdir(parents=True, exist_ok=True)
        d = home / f"{spec.name}-{spec.key}"
        error = self.shared / f"{spec.name}-{spec.key}.error"  # for this run's workers only
        with open(home / f"{spec.name}-{spec.key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if error.exists():
                raise PyckptError(f"snapshot of {spec.argv!r} failed in another worker: {error.read_text()}")
            token = _read(d / "DONE")
            if token is not None and stale is not None and token == stale:
                token = None  # refused by this kernel or these files: made again
            for attempt in (1, 2):
                try:
                    if token is None:
                        token = self._build(spec, d)
                    log = os.path.realpath(d / "original.log")
                    fds = sorted(f["fd"] for f in pyckpt.open_image(d / "img").summary()["fds"]
                                 if f["path"] == log)
                    break
                except ImageError:  # a cached image damaged since: made again, once
                    if spec.cache is None or attempt == 2:
                        raise
                    token = None
                except PyckptError as e:
                    error.write_text(f"{type(e).__name__}: {e}")
                    raise
        self.images[spec.key] = (d / "img", fds, token)
        return self.images[spec.key]

    def _build(self, spec: _Spec, d: Path) -> None:
        import pyckpt
        from . import hooks

        if d.exists():  # what a failed or stale build left (under the lock: nobody uses it)
            shutil.rmtree(d)
        d.mkdir()
        log = d / "original.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(spec.argv, cwd=spec.cwd, env=spec.env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._guard(proc.pid)
            _wait_ready(proc, spec, log)
            try:
                said = hooks.trigger(proc.pid, "before_dump", spec.hooks_timeout)
            except (TimeoutError, ProcessLookupError) as e:
                said = f"failed: {e}"
            if said not in (None, "ok"):
                warnings.warn(f"pyckpt: the before_dump hooks of {spec.argv!r} (PID {proc.pid}): {said}; "
                              "dumping all the same", stacklevel=2)
            pyckpt.dump(proc.pid, d / "img", kill=True, progress=False)
            proc.wait(timeout=10)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
        token = os.urandom(8).hex()
        (d / "DONE").write_text(token)
        return token

    def _guard(self, pid: int) -> None:
        if self.watchdog is None:
            self.watchdog = _Watchdog()
        self.watchdog.guard(pid)

    # -- one copy per test --

    def copy(self, spec: _Spec, request) -> Copy:
        from . import hooks

        if spec.key in self.failed:
            pytest.skip(f"pyckpt snapshot of {spec.argv!r} is not usable: {self.failed[spec.key]} "
                        "(the error is reported at the first test that used it)")
        try:
            proc, t, log_path = self._restore(spec, request)
        except (FileChangedError, ImageError, KernelMismatchError) as e:
            if spec.cache is None:
                self._failed(spec, e)
                raise
            try:  # a cached image made with other files or another kernel: made again, once
                self.templates.pop(spec.key).close()
            except KeyError:
                pass
            try:
                self.image(spec, stale=self.images[spec.key][2])
                proc, t, log_path = self._restore(spec, request)
            except PyckptError as e:
                self._failed(spec, e)
                raise
        except PyckptError as e:
            self._failed(spec, e)
            raise
        copy = Copy(spec.name, proc, t, log_path)
        try:
            self._guard(copy.init_pid)
            request.node.stash.setdefault(_COPIES, []).append(copy)
            if hooks.registered(copy.pid, "after_restore"):
                _settled(copy.pid)
            try:
                said = hooks.trigger(copy.pid, "after_restore", spec.hooks_timeout)
            except (TimeoutError, ProcessLookupError) as e:
                said = f"failed: {e}"
            if said not in (None, "ok"):
                raise PyckptError(f"the after_restore hooks of the copy {copy.pid} of {spec.argv!r}: {said}")
        except BaseException:
            copy.close()
            raise
        return copy

    def _failed(self, spec: _Spec, e: PyckptError) -> None:
        self.failed[spec.key] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"

    def _restore(self, spec: _Spec, request) -> tuple:
        import pyckpt

        img, log_fds, _ = self.image(spec)
        self.count += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
        log_path = self.logs / f"{self.count:04d}-{safe}.log"
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            t = self.templates.get(spec.key)
            if t is None:
                t = self.templates[spec.key] = pyckpt.template(
                    img, new_netns=True, progress=False, **spec.restore_options)
                if not t.fast:  # said once per snapshot: every copy is a full restore
                    warnings.warn(f"pyckpt: copies of {spec.argv!r} are full restores, not forked from a "
                                  f"template: {t.reason}", stacklevel=1)
            proc = t.copy(fds={**{n: fd for n in log_fds}, **spec.restore_options.get("fds", {})})
        finally:
            os.close(fd)
        return proc, t, log_path


def _settled(pid: int, timeout: float = 1.0) -> None:
    """Wait (at most `timeout`) until the just released copy sleeps.  A copy made
    while its main thread waited in a call (epoll_wait...) is released rewound to
    make that call again: a signal that comes before it re-entered the call runs
    the C handler and the call then waits on (CPython runs the hooks only once
    the call returns).  Sleeping, it is interrupted by the signal (EINTR)."""
    from .proc import read_stat

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if read_stat(pid).state in "SD":
                return
        except OSError:
            return
        time.sleep(0.0005)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _tail(log: Path, n: int = 10) -> list[str]:
    try:
        return log.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def _listening_inodes(pid: int, port: int) -> set[int]:
    from .proc.net import TCP_LISTEN, read_net_sockets

    try:
        return {s.inode for s in read_net_sockets(pid, "tcp", "tcp6")
                if s.state == TCP_LISTEN and s.local[1] == port}
    except (OSError, IndexError, ValueError):
        return set()


def _socket_inodes(pid: int) -> set[int]:
    import psutil

    pids = [pid]
    try:
        pids += [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        pass
    inodes = set()
    for p in pids:
        try:
            names = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for n in names:
            try:
                link = os.readlink(f"/proc/{p}/fd/{n}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    return inodes


def _wait_ready(proc: subprocess.Popen, spec: _Spec, log: Path) -> None:
    deadline = time.monotonic() + spec.timeout
    rx = re.compile(spec.ready) if isinstance(spec.ready, str) else None
    while True:
        if rx is not None:
            text = log.read_text(errors="replace")
            if any(rx.search(line) for line in text[: text.rfind("\n") + 1].splitlines()):
                return
        else:
            listening = _listening_inodes(proc.pid, spec.ready)
            if listening and listening & _socket_inodes(proc.pid):
                return
        code = proc.poll()
        if code is not None or time.monotonic() > deadline:
            what = (f"printed no line matching {spec.ready!r}" if rx is not None
                    else f"did not listen on TCP port {spec.ready}")
            when = f"exited with status {code} first" if code is not None else f"within {spec.timeout} s"
            lines = _tail(log)
            shown = "\n".join(f"    {line}" for line in lines) or "    (nothing)"
            raise NotReadyError(spec.argv, lines, code,
                                f"the process to snapshot, {spec.argv!r}, {what}: {when}; "
                                f"the last lines it printed ({log}):\n{shown}")
        time.sleep(0.01)


# --- plugin hooks --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def _pyckpt_session(request, tmp_path_factory):
    session = _Session(request.config, tmp_path_factory)
    try:
        yield session
    finally:
        session.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for copy in item.stash.get(_COPIES, []):
            report.sections.append((f"pyckpt copy {copy.name} (pid {copy.pid}) log",
                                    copy.log or "(nothing printed)"))
