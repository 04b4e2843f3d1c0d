"""Task basics, minimum files and memory kinds, checked by the target itself after restore."""

import json
import os
import signal
import subprocess
import sys
import time

import pyckpt
from conftest import TARGETS

SPARSE = 64 << 20


def _check(t, after: int) -> str:
    os.kill(t.pid, signal.SIGUSR1)
    return t.wait_for(r"CHECK (ok|FAIL.*)", after=after).group(1)


def test_state_survives_dump_and_restore(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    t = spawn([python_exe, str(TARGETS / "statetarget.py"), str(work)])
    t.wait_for("READY")
    assert _check(t, 0) == "ok"
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    t.reap()

    # The image holds only the touched pages of the sparse region, and the
    # fds with their sharing.
    show = json.loads(subprocess.run([sys.executable, "-m", "pyckpt", "show", "--json", str(img)],
                                     check=True, capture_output=True, text=True).stdout)
    sparse = [v for v in show["vmas"] if v["end"] - v["start"] == SPARSE]
    # (its first page was written with zeros, i == 0: a zero page is not stored)
    assert len(sparse) == 1 and sparse[0]["stored_bytes"] == ((SPARSE >> 20) - 1) * 4096
    shared_map = [v for v in show["vmas"] if v["name"].endswith("shared.map")]
    assert shared_map and shared_map[0]["shared"] and shared_map[0]["stored_bytes"] == 0
    fds = {f["fd"]: f for f in show["fds"]}
    data = [f for f in fds.values() if f["path"].endswith("data.bin") and f["shared_with"]]
    assert len(data) == 2, "the dup'ed fds must share one description"
    assert any(f["kind"] == "chardev" and f["path"] == "/dev/null" for f in fds.values())

    n_lines = len(t.lines())
    restored = pyckpt.restore(img)
    spawn.track(restored.pid)
    assert restored.pid == t.pid
    assert restored.name() == "state-target"
    assert _check(t, n_lines) == "ok"


def test_image_and_target_survive_a_second_round(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    t = spawn([python_exe, str(TARGETS / "statetarget.py"), str(work)])
    t.wait_for("READY")
    for round_ in range(2):
        img = tmp_path / f"img{round_}"
        pyckpt.dump(t.pid, img, kill=True)
        t.reap() if round_ == 0 else os.waitpid(t.pid, 0)
        n_lines = len(t.lines())
        restored = pyckpt.restore(img)
        spawn.track(restored.pid)
        assert _check(t, n_lines) == "ok"
        time.sleep(0.05)


CHROOTED = r"""
import os, sys, time
root = sys.argv[1]
os.chroot(root)
os.chdir("/sub")
print("READY", flush=True)
while True:
    time.sleep(0.02)
    if os.path.exists("/sub/ask"):
        os.unlink("/sub/ask")
        ok = os.getcwd() == "/sub" and os.listdir("/") == ["sub"]
        print("CHECK ok" if ok else f"CHECK FAIL cwd={os.getcwd()} root={os.listdir('/')}", flush=True)
"""


def test_chroot_and_cwd_inside_it(spawn, python_exe, tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    t = spawn([python_exe, "-c", CHROOTED, str(root)])
    t.wait_for("READY")
    pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    t.reap()
    n = len(t.lines())
    restored = pyckpt.restore(tmp_path / "img")
    spawn.track(restored.pid)
    assert os.readlink(f"/proc/{t.pid}/root") == str(root)
    (root / "sub" / "ask").touch()
    assert t.wait_for(r"CHECK (ok|FAIL.*)", after=n).group(1) == "ok"


USER_TARGET = r"""
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
import selfcheck
def check():
    status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
    ok = (os.getresuid() == (65534,) * 3 and os.getresgid() == (65534,) * 3
          and os.getgroups() == [100] and status["NoNewPrivs"].strip() == "1"
          and libc.prctl(3, 0, 0, 0, 0) == 1 and int(status["CapEff"], 16) == 0)
    return [] if ok else [f"{os.getresuid()} {os.getgroups()}"]
selfcheck.listen()
print("READY", flush=True)
selfcheck.serve(check)
"""


def test_ordinary_user_comes_back_as_that_user(spawn, python_exe, tmp_path):
    from conftest import check, dump_kill_restore

    # pyckpt's own interpreter may sit where user 65534 cannot read it (/root/.pyenv)
    exe = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else python_exe
    t = spawn([exe, "-c", USER_TARGET], user=65534, group=65534, extra_groups=[100], cwd="/")
    t.wait_for("^READY")
    before = check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    assert os.stat(f"/proc/{t.pid}/mem").st_uid == 65534  # still dumpable: its owner may debug it
    assert check(t) > before


def test_seccomp_process_is_refused(spawn, python_exe, tmp_path):
    code = ("import ctypes, sys\nprint('READY', flush=True)\n"
            "ctypes.CDLL(None).prctl(22, 1, 0, 0, 0)\nwhile True:\n    pass\n")  # SECCOMP_MODE_STRICT
    t = spawn([python_exe, "-c", code])
    t.wait_for("^READY")
    deadline = time.monotonic() + 10
    while "Seccomp:\t1" not in open(f"/proc/{t.pid}/status").read():  # in strict mode now
        assert time.monotonic() < deadline, "the target never entered seccomp"
        time.sleep(0.01)
    try:
        pyckpt.dump(t.pid, tmp_path / "img")
    except pyckpt.UnsupportedError as e:
        assert "seccomp" in str(e) and str(t.pid) in str(e)
    else:
        raise AssertionError("a process under seccomp was dumped")
    assert t.state() == "R"  # still spinning, untouched


THREAD_SECCOMP_TARGET = r"""
import ctypes, mmap, os, threading, time
# prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) in this thread only, then spin without a syscall
# (any call of pyckpt's injected into it but read/write/exit/sigreturn kills the process)
code = bytes.fromhex("b89d000000" "bf16000000" "be01000000" "0f05" "ebfe")
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
spin = ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
threading.Thread(target=spin, daemon=True).start()
print("READY", flush=True)
while True:
    time.sleep(0.05)
"""


def test_a_thread_with_a_seccomp_filter_of_its_own_is_refused(spawn, python_exe, tmp_path):
    """The leader's status shows no seccomp; one thread's does (strict mode, its own): the
    dump refuses before injecting a call into that thread (which would kill the process),
    and the process runs on."""
    t = spawn([python_exe, "-c", THREAD_SECCOMP_TARGET])
    t.wait_for("^READY")
    deadline = time.monotonic() + 10
    strict = []
    while not strict:
        for tid in os.listdir(f"/proc/{t.pid}/task"):
            if "Seccomp:\t1" in open(f"/proc/{t.pid}/task/{tid}/status").read():
                strict.append(int(tid))
        assert strict or time.monotonic() < deadline, "no thread of the target entered seccomp"
        time.sleep(0.01)
    assert "Seccomp:\t0" in open(f"/proc/{t.pid}/status").read()
    try:
        pyckpt.dump(t.pid, tmp_path / "img")
    except pyckpt.UnsupportedError as e:
        assert "seccomp" in str(e) and f"thread {strict[0]}" in str(e), str(e)
    else:
        raise AssertionError("a process with a thread under seccomp was dumped")
    time.sleep(0.2)
    assert t.state() in ("S", "R"), t.state()  # alive, not killed by an injected call
    assert not (tmp_path / "img" / "COMPLETE").exists()


SHMEM_TARGET = r"""
import mmap, signal, time
m = mmap.mmap(-1, 64 * 4096, mmap.MAP_SHARED)
m[0:5] = b"HELLO"
m[5 * 4096:5 * 4096 + 5] = b"WORLD"
m.madvise(mmap.MADV_DONTNEED, 0, 4096)  # this process drops the page; shared memory keeps it
import selfcheck
def check():
    ok = m[0:5] == b"HELLO" and m[5 * 4096:5 * 4096 + 5] == b"WORLD" and m[4096:4100] == bytes(4)
    return [] if ok else [f"{m[0:5]!r} {m[20480:20485]!r}"]
selfcheck.listen()
print("READY", flush=True)
selfcheck.serve(check)
"""


def test_shared_memory_pages_not_mapped_by_the_process_are_kept(spawn, python_exe, tmp_path):
    from conftest import check, dump_kill_restore

    t = spawn([python_exe, "-c", SHMEM_TARGET])
    t.wait_for("^READY")
    dump_kill_restore(spawn, t, tmp_path / "img")
    info = pyckpt.open_image(tmp_path / "img").summary()
    shared = [v for v in info["vmas"] if v["kind"] == "shared_anon"]
    assert [v["stored_bytes"] for v in shared] == [0]  # the object holds the pages, not the VMA
    (obj,) = info["shared_memory"]
    assert obj["mapped_by"] == [[t.pid, shared[0]["start"], shared[0]["offset"]]]
    assert obj["stored_bytes"] == 2 * 4096  # only the two pages with data
    check(t)
