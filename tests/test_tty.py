"""Terminals: pty pairs inside the image, shell jobs (kinds/tty.py).

Every test starts its own targets (and its own tmux server, on its own
socket name) and kills only those, by PID.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shlex
import signal
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import psutil
import pytest

import pyckpt
from pyckpt.kinds.tty import CttyRecord, PtyMasterRecord, PtySlaveRecord

from conftest import TARGETS, Target, error_in_child, kill_own, real_program, reap_dumped

TMUX = real_program("tmux")
PYCKPT = [sys.executable, "-m", "pyckpt"]


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait until `pid` is gone, reaping it if it became a zombie child of this test."""
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still exists")
        time.sleep(0.02)


def _ask(t, after: int) -> tuple[str, str]:
    """SIGUSR1 to the pty.fork() parent: (its GOT line, its CHECK line)."""
    n = len(t.lines())
    os.kill(t.pid, signal.SIGUSR1)
    check = t.wait_for(r"^CHECK .*", after=n).group(0)
    got = t.wait_for(r"^GOT .*", after=n).group(0)
    m = re.match(r"^CHECK (ok|FAIL.*)", check)
    assert m.group(1) == "ok", f"{check} ({got})"
    return got, check


def _ctty(pid: int) -> int:
    """The device number of a process's controlling terminal (/proc/PID/stat tty_nr)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[4])


def _tpgid(pid: int) -> int:
    """The foreground process group of a process's controlling terminal (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[5])


def _answer(got: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in got.split() if "=" in kv)


def _start_pty_fork(spawn):
    t = spawn([sys.executable, str(TARGETS / "pty_fork.py")], name="ptyfork")
    m = t.wait_for(r"^READY parent=(\d+) child=(\d+) tty=(\S+)$")
    assert int(m.group(1)) == t.pid
    return t, int(m.group(2)), m.group(3)


def test_pty_fork_pair_restored(spawn, tmp_path):
    """A pty.fork() parent and child: after dump --kill and restore the parent writes to
    the master and reads the child's answer; termios, window size, packet mode, the
    child's controlling terminal and foreground group are as they were."""
    t, child, tty = _start_pty_fork(spawn)
    got, _ = _ask(t, 0)
    before = _answer(got)
    assert before == {"tty": tty, "ws": "33x101", "echo": "0", "intr": "2", "ctty": "1", "fg": "1",
                      "sid": "1"}, got
    img = pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    procs = img.summary()["processes"]
    assert [p["pid"] for p in procs] == [t.pid, child]
    kinds = {(p["pid"], f["fd"]): f["kind"] for p in procs for f in p["fds"]}
    assert kinds[(child, 0)] == "pty slave" and "pty master" in kinds.values()
    reap_dumped(t)
    _wait_gone(child)
    spawn.track(child)  # killed after its parent (finalizers go in reverse)
    proc = pyckpt.restore(tmp_path / "img")
    spawn.track(proc.pid)
    t.popen = None
    assert proc.pid == t.pid
    assert [c.pid for c in proc.children()] == [child]
    got, check = _ask(t, 0)
    assert check == "CHECK ok counter=2"
    after = _answer(got)
    # the pair's number was free again: it kept it
    assert after == before, (before, after)
    node = os.stat(tty)
    assert (node.st_uid, node.st_gid, node.st_mode & 0o7777) == (65534, 65534, 0o600)
    assert _ctty(child) == os.stat(tty).st_rdev


@pytest.mark.skipif(os.geteuid() != 0, reason="new_pidns needs CAP_SYS_ADMIN")
def test_pty_pair_copy_gets_another_number(spawn, tmp_path):
    """A copy restored while the original runs: the original holds /dev/pts/N, so the
    copy's pair has another number, and its child's ttyname() says so; both pairs work."""
    t, child, tty = _start_pty_fork(spawn)
    _ask(t, 0)
    pyckpt.dump(t.pid, tmp_path / "img")
    copy_log = tmp_path / "copy.log"
    proc = pyckpt.restore(tmp_path / "img", new_pidns=True, fds={1: str(copy_log)})
    init = proc.ppid()
    spawn.track(init)  # our child; killing it ends the namespace and the copy
    copy_child = proc.children()[0].pid
    got, check = _ask(t, 0)  # the original carries on
    assert check == "CHECK ok counter=2" and _answer(got)["tty"] == tty
    copy_t = Target(proc.pid, copy_log)  # its own stdout (and stderr, which shared it)
    got, check = _ask(copy_t, 0)
    assert check == "CHECK ok counter=2"
    copy = _answer(got)
    assert copy["tty"] != tty and copy["tty"].startswith("/dev/pts/"), copy
    assert _ctty(copy_child) == os.stat(copy["tty"]).st_rdev
    node = os.stat(copy["tty"])  # the copy's node is as the original's was
    assert (node.st_uid, node.st_gid, node.st_mode & 0o7777) == (65534, 65534, 0o600)
    assert {k: v for k, v in copy.items() if k != "tty"} == {
        "ws": "33x101", "echo": "0", "intr": "2", "ctty": "1", "fg": "1", "sid": "1"}
    assert _ask(t, 0)[1] == "CHECK ok counter=3"  # the original still has its own pair


SLEEPER = "import time\nwhile 1: time.sleep(0.05)"
# a shell-like session leader: starts the sleeper as a job (its own group, in the foreground)
JOB_SHELL = f"""
import os, sys
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.execv(sys.executable, [sys.executable, "-c", {SLEEPER!r}])
os.setpgid(pid, pid)
os.tcsetpgrp(0, pid)
os.waitpid(pid, 0)
"""


def _on_outside_terminal(*, leader: bool):
    """A sleeper on a pty whose master this test holds (a terminal outside the image): the
    leader of a session with that terminal (leader=True), or a job in the foreground of a
    session a shell-like parent leads.  (Popen, the sleeper's PID, the master fd.)"""
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-c", SLEEPER if leader else JOB_SHELL], stdin=slave,
                         stdout=slave, stderr=slave, start_new_session=True,
                         preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    job = p.pid
    if not leader:
        deadline = time.monotonic() + 10
        while not psutil.Process(p.pid).children():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        job = psutil.Process(p.pid).children()[0].pid
    time.sleep(0.3)  # exec'd and sleeping
    return p, job, master


def _end(p, job: int, master: int) -> None:
    kill_own(p.pid)
    kill_own(job)  # reparented to this test (its subreaper) when the shell-like parent died
    os.close(master)


def test_kill_refused_for_session_leader_on_outside_terminal(spawn, tmp_path):
    """dump(kill=True) refuses a process that leads its session on a terminal outside the
    image (no restore could give it that terminal back), naming it, and leaves it running;
    without kill the image is written, and a shell-job restore of it is refused."""
    p, _, master = _on_outside_terminal(leader=True)
    try:
        with pytest.raises(pyckpt.UnsupportedError, match=rf"process {p.pid} leads its session on the "
                           r"terminal /dev/pts/\d+, outside the image.*without --kill"):
            pyckpt.dump(p.pid, tmp_path / "img", kill=True)
        assert psutil.Process(p.pid).status() in ("sleeping", "running")
        assert not (tmp_path / "img").exists()
        img = pyckpt.dump(p.pid, tmp_path / "img2")
        (ctty,) = img._reader.of_type(CttyRecord)
        assert ctty.index == -1 and ctty.leader
        problems = img.check_restore(shell_job=True)
        assert any("led its own session" in str(x) for x in problems), problems
    finally:
        _end(p, p.pid, master)


def test_shell_job_needs_a_terminal(spawn, tmp_path):
    """Without a controlling terminal of its own pyckpt refuses shell_job, before anything
    is made; the refusal of a terminal fd names --shell-job as a fix."""
    p, job, master = _on_outside_terminal(leader=False)
    try:
        img = pyckpt.dump(job, tmp_path / "img")
        (ctty,) = img._reader.of_type(CttyRecord)
        assert ctty.index == -1 and not ctty.leader
        problems = img.check_restore()
        terminal = [x for x in problems if "terminal /dev/pts/" in str(x)]
        assert terminal and all(any(f.option == "shell_job" for f in x.fixes) for x in terminal), problems

        def work():
            for x in pyckpt.open_image(tmp_path / "img").check_restore(shell_job=True):
                if "shell_job" in str(x):
                    raise x.error

        err = error_in_child(work, prepare=os.setsid)
        assert isinstance(err, pyckpt.RestoreError) and "pyckpt has none" in str(err), err
        # the dump's summary (on a terminal) says so too
        from test_cli_edges import run_cli_on_terminal

        code, _, said = run_cli_on_terminal("--no-progress", "dump", job, tmp_path / "img2")
        assert code == 0 and "a restore needs --shell-job (a terminal outside the image" in said, said
    finally:
        _end(p, job, master)


# --- a shell job driven through tmux -------------------------------------------------------

COUNTER = r'''
import os, sys
log = open(sys.argv[1], "a", buffering=1)
log.write(f"READY {os.getpid()}\n")
n = 0
try:
    while True:
        line = input(f"[{n}]> ")
        n += 1
        log.write(f"GOT {n} {line} fg={int(os.tcgetpgrp(0) == os.getpgrp())} "
                  f"pgrp={int(os.getpgrp() == os.getpid())}\n")
except KeyboardInterrupt:
    log.write("INTERRUPTED\n")
    sys.exit(42)
'''


class Tmux:
    """A tmux server of this test's own (-L NAME), killed by its PID at the end."""

    def __init__(self, tmp_path: Path, command: str = "bash --norc --noprofile -i"):
        self.name = f"pyckpt-test-{uuid.uuid4().hex[:12]}"
        self.server = None
        env = dict(os.environ, PYTHONPATH=str(TARGETS), HISTFILE="/dev/null", PS1="$ ", TERM="screen")
        self.env = env
        self.run("-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "50", command)
        self.server = int(self.run("display-message", "-p", "#{pid}").strip())

    def run(self, *args: str) -> str:
        return subprocess.run([TMUX, "-L", self.name, *args], check=True, capture_output=True,
                              text=True, env=self.env, timeout=20).stdout

    def keys(self, *keys: str, target: str = "0") -> None:
        self.run("send-keys", "-t", target, *keys)

    def type(self, line: str, target: str = "0") -> None:
        self.keys("-l", line, target=target)
        self.keys("Enter", target=target)

    def screen(self, target: str = "0") -> str:
        return self.run("capture-pane", "-p", "-t", target)

    def close(self) -> None:
        try:
            subprocess.run([TMUX, "-L", self.name, "kill-server"], capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self.server is not None:
            kill_own(self.server)
        try:  # left behind by a server that was killed (SIGKILL) rather than told to end
            os.unlink(f"/tmp/tmux-{os.geteuid()}/{self.name}")
        except OSError:
            pass


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.close()


def _wait_line(path: Path, pattern: str, what, timeout: float = 15.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        m = re.search(pattern, text, re.M)
        if m:
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in {path}: {text!r}; screen:\n{what()}")
        time.sleep(0.05)


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (scripts/setup.sh installs it)")
def test_shell_job_through_tmux(tmux, spawn, tmp_path):
    """A program reading input() in a tmux pane is dumped with kill from outside, restored
    with `pyckpt restore --shell-job` typed into the pane: keys typed reach it (it is the
    terminal's foreground group), Ctrl-Z stops it and pyckpt (the shell has the terminal),
    `fg` continues both, Ctrl-C interrupts it, and the pane's shell gets its exit status
    from pyckpt."""
    log = tmp_path / "counter.log"
    script = tmp_path / "counter.py"
    script.write_text(COUNTER)
    tmux.type(f"{shlex.quote(sys.executable)} {script} {log}")
    pid = int(_wait_line(log, r"^READY (\d+)$", tmux.screen).group(1))
    tmux.type("hello")
    _wait_line(log, r"^GOT 1 hello fg=1 pgrp=1$", tmux.screen)
    img = pyckpt.dump(pid, tmp_path / "img", kill=True)
    assert not img.dump_stats.unreaped  # the pane's shell reaped it
    fds = {f["fd"]: f for f in img.summary()["processes"][0]["fds"]}
    assert fds[0]["kind"] == "external" and fds[0]["what"].startswith("terminal /dev/pts/")
    _wait_gone(pid)
    cmd = " ".join(map(shlex.quote, [*PYCKPT, "restore", "--no-progress", "--shell-job", str(tmp_path / "img")]))
    tmux.type(cmd)
    deadline = time.monotonic() + 20
    while not psutil.pid_exists(pid):
        assert time.monotonic() < deadline, tmux.screen()
        time.sleep(0.05)
    restored = psutil.Process(pid)
    assert restored.terminal() is not None
    tmux.type("world")
    _wait_line(log, r"^GOT 2 world fg=1 pgrp=1$", tmux.screen)
    # Ctrl-Z stops the job, and pyckpt with it (the shell sees a stopped job); fg continues both
    pyckpt_pid = restored.ppid()
    assert psutil.Process(pyckpt_pid).cmdline()[1:3] == ["-m", "pyckpt"]
    tmux.keys("C-z")
    deadline = time.monotonic() + 10
    while not (restored.status() == psutil.STATUS_STOPPED
               and psutil.Process(pyckpt_pid).status() == psutil.STATUS_STOPPED):
        assert time.monotonic() < deadline, tmux.screen()
        time.sleep(0.05)
    tmux.type(f"echo STOPPED-SEEN >> {log}")  # the shell has the terminal while the job is stopped
    _wait_line(log, r"^STOPPED-SEEN$", tmux.screen)
    tmux.type("fg")
    tmux.type("again")
    _wait_line(log, r"^GOT 3 again fg=1 pgrp=1$", tmux.screen)
    tmux.keys("C-c")
    _wait_line(log, r"^INTERRUPTED$", tmux.screen)
    # the shell has its terminal back, and pyckpt's exit status is the job's
    tmux.type(f"echo STATUS=$? >> {log}")
    _wait_line(log, r"^STATUS=42$", tmux.screen)
    assert not psutil.pid_exists(pyckpt_pid) and not psutil.pid_exists(pid)


# --- forged images --------------------------------------------------------------------------

def _forged(tmp_path, good, mutate):
    from test_image_consistency import rewrite

    dest = tmp_path / f"forged-{uuid.uuid4().hex[:6]}"
    rewrite(str(good), dest, mutate)
    return dest


def _each(cls, change):
    def mutate(recs):
        for r in recs:
            if isinstance(r, cls):
                change(r)
        return recs
    return mutate


@pytest.mark.parametrize("message, mutate", [
    ("pty slave #\\d+ names no saved pty master", _each(PtySlaveRecord, lambda r: setattr(r, "index", r.index + 7))),
    ("a controlling terminal names no saved pty master",
     _each(CttyRecord, lambda r: setattr(r, "index", r.index + 7))),
    ("pty master #\\d+ has a state out of range", _each(PtyMasterRecord, lambda r: setattr(r, "cc", r.cc[:5]))),
    ("pty master #\\d+ has a state out of range",
     _each(PtyMasterRecord, lambda r: setattr(r, "winsize", [1 << 16, 1, 0, 0]))),
    ("a foreground process group out of range", _each(CttyRecord, lambda r: setattr(r, "foreground", 1 << 30))),
])
def test_forged_pty_records_are_image_errors(spawn, tmp_path, message, mutate):
    """Pty records that do not fit together are an ImageError before anything is made."""
    t, child, _ = _start_pty_fork(spawn)
    _ask(t, 0)  # the child is on its terminal (pty.fork's child makes it its own after READY)
    pyckpt.dump(t.pid, tmp_path / "img")  # the original runs on: a restore would fail anyway
    assert pyckpt.open_image(tmp_path / "img").summary()
    bad = _forged(tmp_path, tmp_path / "img", mutate)
    with pytest.raises(pyckpt.ImageError, match=message):
        pyckpt.restore(bad)
    assert psutil.Process(t.pid).children()[0].pid == child  # nothing else was made


COUNTING = "i=0; while :; do i=$((i+1)); echo COUNT $i; sleep 0.1; done"


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (scripts/setup.sh installs it)")
def test_tmux_server_restored(tmp_path):
    """A tmux server (its listening unix socket, its pty masters, the pane shells on the
    slaves, each leading its session with its pane as controlling terminal) dumped with
    kill and restored: the counting pane counts on; in a second window the job a shell ran
    in the foreground (`sleep`) is the foreground group of its terminal again, Ctrl-C
    sent with send-keys ends it, and the shell runs what send-keys types next."""
    t = Tmux(tmp_path, f"bash --norc --noprofile -c {shlex.quote(COUNTING)}")
    members: list[int] = []
    try:
        t.run("new-window", "-d", "bash --norc --noprofile -i")
        out = tmp_path / "typed"

        def count() -> int:
            found = re.findall(r"COUNT (\d+)", t.screen("0:0"))
            return int(found[-1]) if found else 0

        shell = int(t.run("display-message", "-p", "-t", "0:1", "#{pane_pid}"))
        t.type("sleep 1000", target="0:1")
        deadline = time.monotonic() + 10
        while count() < 3 or not psutil.Process(shell).children():
            assert time.monotonic() < deadline, t.screen("0:0")
            time.sleep(0.05)
        job = psutil.Process(shell).children()[0].pid
        time.sleep(0.2)  # the shell gave the job the terminal (tcsetpgrp) before it exec'd sleep
        assert _tpgid(shell) == job and _ctty(shell) != 0
        img = pyckpt.dump(t.server, tmp_path / "img", kill=True)
        members = [p["pid"] for p in img.summary()["processes"]]
        for pid in members:
            _wait_gone(pid)
        proc = pyckpt.restore(tmp_path / "img")
        assert proc.pid == t.server
        at_restore = int(re.findall(r"COUNT (\d+)", t.screen("0:0"))[-1])
        deadline = time.monotonic() + 10
        while count() < at_restore + 5:
            assert time.monotonic() < deadline, t.screen("0:0")
            time.sleep(0.05)
        assert psutil.Process(job).ppid() == shell and psutil.Process(shell).ppid() == t.server
        assert _tpgid(shell) == job and _ctty(shell) != 0  # TIOCSCTTY and TIOCSPGRP
        t.keys("C-c", target="0:1")
        _wait_gone(job)
        t.type(f"echo TYPED > {out}", target="0:1")
        _wait_line(out, r"^TYPED$", lambda: t.screen("0:1"))
    finally:
        t.close()
        for pid in members:  # the panes' processes, reparented to this test when the server died
            kill_own(pid)


def test_shell_job_refused_before_anything_is_made(spawn, tmp_path):
    """shell_job without a controlling terminal is refused in validation even for an image
    with no terminal at all: nothing is made (the PID stays free)."""
    t = spawn([sys.executable, "-c", "import time\nprint('READY', flush=True)\nwhile 1: time.sleep(0.05)"])
    t.wait_for("^READY$")
    pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    reap_dumped(t)

    def work():
        pyckpt.restore(tmp_path / "img", shell_job=True)

    err = error_in_child(work, prepare=os.setsid)
    assert isinstance(err, pyckpt.RestoreError) and "pyckpt has none" in str(err), err
    assert not psutil.pid_exists(t.pid)
    # (it led its own session, as spawn makes every target do: no shell job either way)
    problems = pyckpt.open_image(tmp_path / "img").check_restore(shell_job=True)
    assert any(f"process {t.pid} led its own session (without a terminal)" in str(p)
               for p in problems), problems
