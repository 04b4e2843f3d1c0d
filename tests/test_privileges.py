"""Dump and restore without root (or without the capabilities they need) are refused up
front: one line naming what is missing, exit 16 (PrivilegeError), before anything is
frozen, read or created, and no image directory is left.  The commands run as uid 65534
(setpriv) against a target of that same uid, so that only privileges are missing."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import pyckpt
from conftest import NOBODY, drop_to_nobody, error_in_child
from pyckpt import privileges

AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
CLI = [sys.executable, "-m", "pyckpt"]


@pytest.fixture
def nobody_dir():
    """A directory uid 65534 may write in (pytest's tmp_path is root's, mode 0700)."""
    d = tempfile.mkdtemp(prefix="pyckpt-nobody-")
    os.chown(d, NOBODY, NOBODY)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def status(pid: int, key: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split(None, 1)[1].strip()
    raise KeyError(key)


def assert_untouched(pid: int) -> None:
    assert status(pid, "TracerPid") == "0"
    assert status(pid, "State")[0] == "S", status(pid, "State")
    assert status(pid, "SigBlk") == "0000000000000000"


def nobody_sleep(spawn):
    t = spawn(["sleep", "600"], name="nobody-sleep", preexec_fn=drop_to_nobody, cwd="/")
    assert status(t.pid, "Uid").split()[0] == str(NOBODY)
    return t


def test_dump_as_nobody_is_refused_up_front(spawn, nobody_dir):
    t = nobody_sleep(spawn)
    image = os.path.join(nobody_dir, "img")
    r = subprocess.run(AS_NOBODY + CLI + ["dump", str(t.pid), image], capture_output=True, text=True)
    assert r.returncode == pyckpt.PrivilegeError.exit_code == 16, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("pyckpt dump: error: "), line
    assert f"process {t.pid}" in line
    for missing in ("root (pyckpt runs as uid 65534)", "CAP_SYS_PTRACE", "CAP_CHECKPOINT_RESTORE",
                    f"/proc/{t.pid}/map_files"):
        assert missing in line, (missing, line)
    assert "nothing was frozen or written" in line and "no image directory was made" in line
    assert not os.path.exists(image)
    assert os.listdir(nobody_dir) == []
    assert_untouched(t.pid)
    # an empty directory given is left as it was
    os.mkdir(image)
    os.chown(image, NOBODY, NOBODY)
    r = subprocess.run(AS_NOBODY + CLI + ["dump", str(t.pid), image], capture_output=True, text=True)
    assert r.returncode == 16 and os.listdir(image) == []
    assert_untouched(t.pid)


def test_api_as_nobody_raises_privilege_error(spawn, nobody_dir, tmp_path):
    """dump() and restore() in a process of uid 65534 (forked from this one, so the modules
    are loaded): PrivilegeError with .missing and .operation."""
    import pyckpt.dumper  # noqa: F401  (the child cannot read the modules under /root)
    import pyckpt.restorer  # noqa: F401
    from pyckpt.kinds import load_all

    load_all()
    t = nobody_sleep(spawn)
    image = os.path.join(nobody_dir, "img")

    def as_nobody(work):
        return error_in_child(work, drop_to_nobody)

    e = as_nobody(lambda: pyckpt.dump(t.pid, image, progress=False))
    assert isinstance(e, pyckpt.PrivilegeError), e
    assert e.operation == "dump" and e.missing[0] == "root (pyckpt runs as uid 65534)"
    assert any("CAP_SYS_PTRACE" in m for m in e.missing)
    assert not os.path.exists(image)
    assert_untouched(t.pid)

    e = as_nobody(lambda: pyckpt.restore(tmp_path / "no-such-image", progress=False))
    assert isinstance(e, pyckpt.PrivilegeError), e  # before the image is even read
    assert e.operation == "restore"
    assert any("CAP_CHECKPOINT_RESTORE" in m for m in e.missing)


def test_restore_and_check_as_nobody_are_refused_before_anything_is_made(spawn, tmp_path):
    t = spawn(["sleep", "600"], name="sleep")
    image = tmp_path / "img"
    pyckpt.dump(t.pid, image, kill=True, progress=False)
    t.reap()
    assert not os.path.exists(f"/proc/{t.pid}")
    for command in (["restore"], ["restore", "--new-pidns"], ["check", "--restore"]):
        r = subprocess.run(AS_NOBODY + CLI + command + [str(image)], capture_output=True, text=True)
        assert r.returncode == 16, r.stdout + r.stderr
        line = r.stderr.strip()
        assert "\n" not in line and f"the image at {image}" in line, line
        assert "root (pyckpt runs as uid 65534)" in line and "CAP_CHECKPOINT_RESTORE" in line, line
        assert ("CAP_SYS_ADMIN (for --new-pidns" in line) == ("--new-pidns" in command), line
        assert r.stdout == ""
        assert not os.path.exists(f"/proc/{t.pid}"), "a refused restore made a process"


def test_root_without_the_capabilities_and_nobody_with_them_are_refused(spawn, nobody_dir):
    """What is missing is named exactly: root whose bounding set lacks the capabilities
    (a container's root) misses those; uid 65534 with them as ambient capabilities misses
    root only (restored tasks start as copies of pyckpt: its model of credentials needs root)."""
    t = nobody_sleep(spawn)
    image = os.path.join(nobody_dir, "img")
    r = subprocess.run(["setpriv", "--bounding-set", "-sys_ptrace,-checkpoint_restore,-sys_admin"]
                       + CLI + ["dump", str(t.pid), image], capture_output=True, text=True)
    assert r.returncode == 16, r.stderr
    assert "root (pyckpt runs as" not in r.stderr and "--cap-add SYS_PTRACE" in r.stderr, r.stderr
    assert "CAP_SYS_PTRACE (to stop and read" in r.stderr and "CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN" in r.stderr
    caps = "+sys_ptrace,+checkpoint_restore,+sys_admin"
    r = subprocess.run(AS_NOBODY + ["--inh-caps", caps, "--ambient-caps", caps]
                       + CLI + ["dump", str(t.pid), image], capture_output=True, text=True)
    assert r.returncode == 16, r.stderr
    assert "root (pyckpt runs as uid 65534; capabilities alone do not do" in r.stderr, r.stderr
    assert "CAP_SYS_PTRACE (" not in r.stderr
    assert not os.path.exists(image)
    assert_untouched(t.pid)


def test_root_has_what_it_needs_here():
    """The suite runs as root: nothing is missing (else every other test would be refused)."""
    assert privileges.missing("dump", pid=os.getpid()) == []
    assert privileges.missing("restore", new_namespaces=True) == []


def test_map_files_are_tried_only_outside_the_initial_user_namespace(monkeypatch):
    """With CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the initial user namespace a link
    of map_files can be followed; elsewhere (a container's user namespace) one is tried."""
    from pyckpt import privileges

    tried = []
    monkeypatch.setattr(privileges, "_map_files_denied", lambda pid: tried.append(pid) or "")
    monkeypatch.setattr(privileges, "_initial_user_ns", lambda: True)
    assert privileges.missing("dump", pid=os.getpid()) == [] and tried == []
    monkeypatch.setattr(privileges, "_initial_user_ns", lambda: False)
    assert privileges.missing("dump", pid=os.getpid()) == [] and tried == [os.getpid()]
