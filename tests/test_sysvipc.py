"""SysV shared memory: segments attached by a process, or by a tree, saved and restored.

The target (targets/sysv_shm.py) attaches one segment three times (one
attachment split by mprotect, one with a hole), optionally marks it for
removal and forks a child; after restore each process checks itself: same
id, key, size, mode, owner and removal state, shm_nattch, content through
every attachment, every attachment at its address with its protections.
A write by one process reaches the other through the restored segment
(the mailbox words).
"""

import ctypes
import os
import re
import signal

import pytest

import pyckpt
from conftest import TARGETS, Target, assert_running, check, kill_own, reap_dumped

libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]


def segments() -> dict[int, list[str]]:
    """shmid -> its line of /proc/sysvipc/shm (this test's IPC namespace)."""
    with open("/proc/sysvipc/shm") as f:
        return {int(line.split()[1]): line.split() for line in f.read().splitlines()[1:]}


def remove_segment(shmid: int) -> None:
    libc.shmctl(shmid, 0, None)  # IPC_RMID; a segment only this test made


@pytest.fixture
def segment_cleanup():
    """Segments the test's targets made are removed at the end (a killed target's
    segment not marked for removal stays in the namespace until removed)."""
    made: list[int] = []
    yield made
    for shmid in made:
        if shmid in segments():
            remove_segment(shmid)


def start(spawn, python_exe, rmid: bool, tree: bool, made: list[int]) -> tuple[Target, int | None, int]:
    t = spawn([python_exe, str(TARGETS / "sysv_shm.py"), "1" if rmid else "0", "1" if tree else "0"],
              name="sysv")
    m = t.wait_for(r"^READY parent \d+ shmid=(\d+)")
    shmid = int(m.group(1))
    made.append(shmid)
    child = int(t.wait_for(r"^READY parent .* child=(\d+)").group(1)) if tree else None
    check(t)
    return t, child, shmid


def line_key(t: Target) -> str:
    return re.search(r"key=(0x[0-9a-f]+)", t.text()).group(1)


def mailbox(t: Target, pid: int, who: str) -> int:
    """Ask process `pid` (logging to t's log) to check itself; return the mailbox word it read."""
    after = len(t.lines())
    os.kill(pid, signal.SIGUSR1)
    box = int(t.wait_for(rf"^MAILBOX {who} (\d+)$", after=after).group(1))
    m = t.wait_for(r"^CHECK (ok counter=\d+|FAIL.*)$", after=after)
    assert m.group(1).startswith("ok"), f"{who} {pid} failed its self-check: {m.group(0)}"
    return box


@pytest.mark.parametrize("rmid", [False, True], ids=["kept", "removed"])
def test_segment_of_one_process_in_place(spawn, python_exe, tmp_path, segment_cleanup, rmid):
    t, _, shmid = start(spawn, python_exe, rmid, False, segment_cleanup)
    assert segments()[shmid][6] == "5"  # nattch: five VMAs
    img = tmp_path / "img"
    image = pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    [seg] = image.summary()["sysv_ipc"]  # saved once however often it is attached
    assert seg["what"] == f"SysV shared memory segment key {0 if rmid else int(line_key(t), 16):#010x} id {shmid}"
    assert seg["stored_bytes"] >= 16384 and ("marked for removal" in seg["detail"]) == rmid
    # marked for removal: gone with its last attachment; else left behind, unattached
    assert (shmid in segments()) != rmid
    p = pyckpt.restore(img)
    spawn.track(p.pid)
    t.popen = None
    assert_running(t.pid)
    line = segments()[shmid]  # the same id again (shm_next_id), attached five times
    assert line[6] == "5" and int(line[2], 8) & 0o1000 == (0o1000 if rmid else 0)
    check(t)
    check(t)
    os.kill(t.pid, signal.SIGKILL)
    os.waitpid(t.pid, 0)
    assert (shmid in segments()) != rmid  # removed with its last attachment, as before


@pytest.mark.parametrize("rmid", [False, True], ids=["kept", "removed"])
def test_segment_shared_by_a_tree(spawn, python_exe, tmp_path, segment_cleanup, rmid):
    t, child, shmid = start(spawn, python_exe, rmid, True, segment_cleanup)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    os.waitpid(child, 0)  # orphaned by its parent's death, the child is ours (subreaper)
    p = pyckpt.restore(img)
    spawn.track(p.pid)
    spawn.track(child)
    t.popen = None
    assert segments()[shmid][6] == "10"
    # the parent writes its mark into the child's box; the child reads it, and back
    mailbox(t, t.pid, "parent")
    first = mailbox(t, child, "child")
    assert first // 1000 == t.pid, first
    second = mailbox(t, t.pid, "parent")
    assert second // 1000 == child, second
    assert mailbox(t, child, "child") == first + 1


def test_copies_side_by_side_get_their_own_segment(spawn, python_exe, tmp_path, segment_cleanup):
    """Copies restored with new_pidns live in their own IPC namespace: the same id and
    key as the original, which keeps running with its own segment beside them."""
    t, child, shmid = start(spawn, python_exe, False, True, segment_cleanup)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)  # the original goes on
    copies = []
    for i in range(2):
        log = tmp_path / f"copy{i}.log"
        p = pyckpt.restore(img, new_pidns=True, fds={1: str(log)})
        spawn.track(p.ppid())  # the namespace's init: killing it ends the copy
        kids = p.children()
        assert len(kids) == 1
        copies.append((Target(p.pid, log), p, kids[0].pid))
        assert os.stat(f"/proc/{p.pid}/ns/ipc").st_ino != os.stat("/proc/self/ns/ipc").st_ino
    for c, p, kid in copies:
        mailbox(c, p.pid, "parent")  # same id, key, nattch 10 (its own two processes only)
        got = mailbox(c, kid, "child")
        assert got // 1000 == t.pid, got  # the image's PID, inside the copy's namespace
    # the original was not touched by the copies' writes, and still has its own segment
    assert segments()[shmid][6] == "10"
    before = mailbox(t, child, "child")
    mailbox(t, t.pid, "parent")
    assert mailbox(t, child, "child") == before + 1


def test_in_place_refused_while_the_segment_is_attached_elsewhere(spawn, python_exe, tmp_path,
                                                                  segment_cleanup):
    """A segment of the killed original that someone else attached is not a leftover to
    take over: the restore in place is refused before any process is made, naming it
    and the way out; once detached the restore takes it over."""
    t, _, shmid = start(spawn, python_exe, False, False, segment_cleanup)
    key = int(re.search(r"key=(0x[0-9a-f]+)", t.text()).group(1), 16)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    addr = libc.shmat(shmid, None, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    try:
        with pytest.raises(pyckpt.errors.IpcInUseError) as e:
            pyckpt.restore(img)
        assert f"key {key:#010x} id {shmid}" in str(e.value) and "--new-pidns" in str(e.value)
        assert not os.path.exists(f"/proc/{t.pid}")
        problems = pyckpt.open_image(img).check_restore()
        assert [type(p.error) for p in problems] == [pyckpt.errors.IpcInUseError]
        assert [f.option for f in problems[0].fixes] == ["new_pidns"]
    finally:
        libc.shmdt(addr)
    p = pyckpt.restore(img)
    spawn.track(p.pid)
    t.popen = None
    check(t)


def test_segment_of_another_ipc_namespace_is_read_there(spawn, python_exe, tmp_path, segment_cleanup):
    """A copy restored with new_pidns (its own IPC namespace) is dumped again: its
    segment is read in its namespace, and the second image restores."""
    t, _, shmid = start(spawn, python_exe, False, False, segment_cleanup)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)
    log = tmp_path / "copy.log"
    p = pyckpt.restore(img, new_pidns=True, fds={1: str(log)})
    init = p.ppid()
    spawn.track(init)
    c = Target(p.pid, log)
    mailbox(c, p.pid, "parent")
    img2 = tmp_path / "img2"
    pyckpt.dump(p.pid, img2)
    kill_own(init)
    p2 = pyckpt.restore(img2, new_pidns=True, fds={1: str(tmp_path / "copy2.log")})
    spawn.track(p2.ppid())
    c2 = Target(p2.pid, tmp_path / "copy2.log")
    mailbox(c2, p2.pid, "parent")


# --- a tree with an IPC namespace of its own: its semaphore sets and message queues ----

NS_TARGET = r"""
import ctypes, os, sys, selfcheck
libc = ctypes.CDLL(None, use_errno=True)
libc.msgrcv.restype = ctypes.c_ssize_t
libc.msgrcv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long, ctypes.c_int]
libc.msgsnd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
IPC_CREAT, GETALL, SETVAL, MSG_COPY, IPC_NOWAIT = 0o1000, 13, 16, 0o40000, 0o4000
key = 0x5E600000 | (os.getpid() & 0xFFFF)
semid = libc.semget(key, 3, IPC_CREAT | 0o640)
for i, v in enumerate((5, 0, 7)):
    assert libc.semctl(semid, i, SETVAL, ctypes.c_int(v)) == 0
msqid = libc.msgget(key + 1, IPC_CREAT | 0o620)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
own = sys.argv[1] == "own"  # an IPC namespace of its own: also a segment nobody attaches
if own:
    shmid = libc.shmget(key + 2, 10000, IPC_CREAT | 0o600)  # written, then detached
    addr = libc.shmat(shmid, None, 0)
    ctypes.memmove(addr + 5000, b"unattached segment", 18)
    assert libc.shmdt(ctypes.c_void_p(addr)) == 0
sent = [(1, b"first"), (2, b"second message"), (1, bytes(range(256)) * 3)]
for mtype, text in sent:
    buf = ctypes.create_string_buffer(8 + len(text))
    ctypes.c_long.from_buffer(buf).value = mtype
    buf[8:] = text
    assert libc.msgsnd(msqid, buf, len(text), 0) == 0
def check():
    bad = []
    vals = (ctypes.c_ushort * 3)()
    if libc.semctl(semid, 0, GETALL, vals) != 0 or list(vals) != [5, 0, 7]:
        bad.append(f"semaphores {list(vals)} ({os.strerror(ctypes.get_errno())})")
    buf = ctypes.create_string_buffer(8 + 1024)
    for i, (mtype, text) in enumerate(sent):
        n = libc.msgrcv(msqid, buf, 1024, i, IPC_NOWAIT | MSG_COPY)
        if n != len(text) or ctypes.c_long.from_buffer(buf).value != mtype or buf.raw[8:8 + n] != text:
            bad.append(f"message {i}: {n} {os.strerror(ctypes.get_errno())}")
    if libc.msgrcv(msqid, buf, 1024, len(sent), IPC_NOWAIT | MSG_COPY) != -1:
        bad.append("more messages")
    if not own:
        pass
    elif libc.shmget(key + 2, 0, 0) != shmid:
        bad.append(f"segment key {key + 2:#x}: {os.strerror(ctypes.get_errno())}")
    else:
        a = libc.shmat(shmid, None, 0)
        if ctypes.string_at(a + 4999, 20) != b"\0unattached segment\0":
            bad.append("unattached segment content differs")
        libc.shmdt(ctypes.c_void_p(a))
    return bad
print(f"READY semid={semid} msqid={msqid} key={key:#x}", flush=True)
selfcheck.serve(check)
"""


def _own_ns_target(spawn, python_exe):
    t = spawn(["unshare", "--ipc", python_exe, "-c", NS_TARGET, "own"], name="ipcns")
    m = t.wait_for(r"^READY semid=(\d+) msqid=(\d+) key=(0x[0-9a-f]+)")
    assert os.stat(f"/proc/{t.pid}/ns/ipc").st_ino != os.stat("/proc/self/ns/ipc").st_ino
    check(t)
    return t, int(m.group(1)), int(m.group(2)), int(m.group(3), 16)


def test_semaphores_and_queues_of_an_own_ipc_namespace(spawn, python_exe, tmp_path):
    """The tree's own IPC namespace is saved whole (its semaphore sets and message
    queues, with their values and messages, read without consuming them, and a
    segment nobody attaches) and comes back in the copy's new namespace under the
    same ids and keys."""
    t, semid, msqid, key = _own_ns_target(spawn, python_exe)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    p = pyckpt.restore(img, new_pidns=True, fds={1: str(tmp_path / "copy.log")})
    spawn.track(p.ppid())
    c = Target(p.pid, tmp_path / "copy.log")
    check(c)
    check(c)


def test_semaphores_in_place_refused_when_the_key_is_taken(spawn, python_exe, tmp_path):
    """Restored in place (into pyckpt's IPC namespace), a key taken there is an
    IpcInUseError naming it; once it is free the objects are made there."""
    t, semid, msqid, key = _own_ns_target(spawn, python_exe)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    mine = libc.semget(key, 1, 0o1000 | 0o600)  # a set with the image's key, here
    assert mine >= 0
    made = []
    try:
        with pytest.raises(pyckpt.errors.IpcInUseError) as e:
            pyckpt.restore(img)
        assert f"SysV semaphore set key {key:#010x} id {mine}" in str(e.value), str(e.value)
        libc.semctl(mine, 0, 0)  # IPC_RMID
        mine = None
        p = pyckpt.restore(img)
        spawn.track(p.pid)
        t.popen = None
        made = [("s", semid), ("q", msqid)]
        check(t)
    finally:
        if mine is not None:
            libc.semctl(mine, 0, 0)
        kill_own(t.pid)
        for what, ident in made:
            if what == "s":
                libc.semctl(ident, 0, 0)
            else:
                libc.msgctl(ident, 0, None)
        if made:
            libc.shmctl(libc.shmget(key + 2, 0, 0), 0, None)  # its unattached segment, made here too


def test_image_of_an_ordinary_user(spawn, python_exe, tmp_path, segment_cleanup):
    """An image owned by an ordinary user restores its segments when they are that
    user's; a forged one holding a segment of root's is an UntrustedImageError naming
    the segment, before anything is made."""
    import dataclasses

    from conftest import NOBODY, drop_to_nobody
    from pyckpt.kinds.sysvipc import SysvShmRecord

    from test_trust import forge, give

    # (the system python: the venv's lives under /root, which nobody cannot reach)
    t = spawn(["/usr/bin/python3", str(TARGETS / "sysv_shm.py"), "0", "0"], name="sysv", preexec_fn=drop_to_nobody)
    shmid = int(t.wait_for(r"^READY parent \d+ shmid=(\d+)").group(1))
    segment_cleanup.append(shmid)
    key = int(re.search(r"key=(0x[0-9a-f]+)", t.text()).group(1), 16)
    check(t)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    give(img, NOBODY)
    forged = forge(img, tmp_path / "forged",
                   lambda r: dataclasses.replace(r, uid=0) if isinstance(r, SysvShmRecord) else r)
    with pytest.raises(pyckpt.UntrustedImageError) as e:
        pyckpt.restore(forged)
    assert f"SysV shared memory segment key {key:#010x} id {shmid} owned by uid 0" in e.value.wants
    assert not os.path.exists(f"/proc/{t.pid}")
    log = os.open(t.log, os.O_WRONLY | os.O_APPEND)  # (root's: the caller passes it)
    try:
        p = pyckpt.restore(img, fds={1: log})
    finally:
        os.close(log)
    spawn.track(p.pid)
    t.popen = None
    check(t)  # its segment, its owner (nobody)


def test_failed_restore_removes_the_segments_it_made(spawn, python_exe, tmp_path, segment_cleanup,
                                                     monkeypatch):
    """A restore that fails after the segments were made and attached (here: a planted
    failure in a later stage) removes them with its processes; the next one succeeds."""
    from pyckpt import restorer

    t, child, shmid = start(spawn, python_exe, True, True, segment_cleanup)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    os.waitpid(child, 0)
    assert shmid not in segments()  # marked for removal: gone with the killed tree

    def planted(rctx):
        assert shmid in segments()  # made and attached by now
        raise pyckpt.errors.RestoreError("planted failure")

    monkeypatch.setattr(restorer.signals, "restore", planted)
    with pytest.raises(pyckpt.errors.RestoreError, match="planted failure"):
        pyckpt.restore(img)
    assert shmid not in segments()
    assert not os.path.exists(f"/proc/{t.pid}") and not os.path.exists(f"/proc/{child}")
    monkeypatch.undo()
    p = pyckpt.restore(img)
    spawn.track(p.pid)
    spawn.track(child)
    t.popen = None
    mailbox(t, t.pid, "parent")
    mailbox(t, child, "child")


def test_forged_sysv_records_are_image_errors(spawn, python_exe, tmp_path, segment_cleanup):
    """Every bad value in a SysV record is an ImageError when the image is opened,
    before anything is made."""
    import dataclasses

    from pyckpt.kinds.memory import VmaRecord
    from pyckpt.kinds.sysvipc import SysvMessage, SysvMsgRecord, SysvSemRecord, SysvShmRecord

    from test_trust import forge

    t, _, shmid = start(spawn, python_exe, False, False, segment_cleanup)
    shm_img = tmp_path / "shm"
    pyckpt.dump(t.pid, shm_img)
    n, semid, msqid, key = _own_ns_target(spawn, python_exe)
    ns_img = tmp_path / "ns"
    pyckpt.dump(n.pid, ns_img)
    pyckpt.open_image(shm_img)  # the unforged ones open
    pyckpt.open_image(ns_img)

    def sysv_vma(r):
        return isinstance(r, VmaRecord) and r.kind == "sysv_shm"

    edits = {
        "size": (shm_img, lambda r: dataclasses.replace(r, size=0) if isinstance(r, SysvShmRecord) else r),
        "id": (shm_img, lambda r: dataclasses.replace(r, shmid=-5) if isinstance(r, SysvShmRecord) else r),
        "run": (shm_img, lambda r: dataclasses.replace(r, runs=[dataclasses.replace(r.runs[0], file_offset=1 << 40)])
                if isinstance(r, SysvShmRecord) else r),
        "offset": (shm_img, lambda r: dataclasses.replace(r, offset=1 << 30) if sysv_vma(r) else r),
        "missing": (shm_img, lambda r: dataclasses.replace(r, file=dataclasses.replace(r.file, ino=999999))
                    if sysv_vma(r) else r),
        "sem value": (ns_img, lambda r: dataclasses.replace(r, values=[70000]) if isinstance(r, SysvSemRecord) else r),
        "message": (ns_img, lambda r: dataclasses.replace(r, messages=[SysvMessage(1, "zz")])
                    if isinstance(r, SysvMsgRecord) else r),
        "mtype": (ns_img, lambda r: dataclasses.replace(r, messages=[SysvMessage(0, "00")])
                  if isinstance(r, SysvMsgRecord) else r),
    }
    for name, (src, edit) in edits.items():
        forged = forge(src, tmp_path / f"forged-{name.replace(' ', '-')}", edit)
        with pytest.raises(pyckpt.errors.ImageError) as e:
            pyckpt.open_image(forged)
        assert "SysV" in str(e.value) or "sysvipc" in str(e.value), (name, str(e.value))
    check(t)
    check(n)


def test_semaphores_and_queues_a_tree_uses_in_a_shared_namespace(spawn, python_exe, tmp_path):
    """In pyckpt's own IPC namespace the sets and queues the tree used last (GETPID,
    lspid/lrpid) are saved: a copy in a new namespace has them with their values and
    messages, beside the running original; in place after a kill the original's
    leftovers are taken over and set back to the image's state."""
    t = spawn([python_exe, "-c", NS_TARGET, "shared"], name="shared")
    m = t.wait_for(r"^READY semid=(\d+) msqid=(\d+) key=(0x[0-9a-f]+)")
    semid, msqid = int(m.group(1)), int(m.group(2))
    try:
        check(t)
        img = tmp_path / "img"
        image = pyckpt.dump(t.pid, img)
        assert {o["what"].split(" key")[0] for o in image.summary()["sysv_ipc"]} == {
            "SysV semaphore set", "SysV message queue"}
        p = pyckpt.restore(img, new_pidns=True, fds={1: str(tmp_path / "copy.log")})
        spawn.track(p.ppid())
        check(Target(p.pid, tmp_path / "copy.log"))
        check(t)  # the original's own are untouched
        os.kill(t.pid, signal.SIGKILL)
        t.reap()
        # the leftovers change after the dump: the image's state comes back
        assert libc.semctl(semid, 0, 16, ctypes.c_int(99)) == 0  # SETVAL
        extra = ctypes.create_string_buffer(b"\x01\0\0\0\0\0\0\0late", 12)
        assert libc.msgsnd(msqid, extra, 4, 0o4000) == 0
        log = os.open(t.log, os.O_WRONLY | os.O_APPEND)  # (its log grew since: appended to)
        try:
            p = pyckpt.restore(img, fds={1: log})
        finally:
            os.close(log)
        spawn.track(p.pid)
        t.popen = None
        check(t)
    finally:
        kill_own(t.pid)
        libc.semctl(semid, 0, 0)  # IPC_RMID: the sets and queues outlive their processes
        libc.msgctl(msqid, 0, None)


SPLIT_TARGET = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
child = os.fork()
if child == 0:
    assert libc.unshare(0x08000000) == 0  # CLONE_NEWIPC: a namespace of its own
    shmid = libc.shmget(0, 4096, 0o1600)
    assert libc.shmat(shmid, None, 0) not in (None, ctypes.c_void_p(-1).value)
    print(f"READY child {os.getpid()} shmid={shmid}", flush=True)
    while True:
        time.sleep(1)
while True:
    time.sleep(1)
"""


def test_tree_across_ipc_namespaces_is_refused(spawn, python_exe, tmp_path):
    """A restore puts a tree into one IPC namespace: a child with SysV objects in
    another namespace than the tree's first process is refused at dump, naming both;
    the tree runs on."""
    t = spawn([python_exe, "-c", SPLIT_TARGET], name="split")
    m = t.wait_for(r"^READY child (\d+) shmid=(\d+)")
    child = int(m.group(1))
    try:
        with pytest.raises(pyckpt.UnsupportedError) as e:
            pyckpt.dump(t.pid, tmp_path / "img")
        assert f"process {child}: memory at " in str(e.value)
        assert f"in another IPC namespace than process {t.pid}" in str(e.value), str(e.value)
        assert t.alive() and psutil_state(child) in "SR"
    finally:
        kill_own(t.pid)
        kill_own(child)  # orphaned: ours now (its namespace and segment go with it)


def psutil_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2]


def test_ipc_stat_buffers_have_the_kernels_size():
    """IPC_STAT writes the kernel's whole x86-64 *id64_ds: a smaller ctypes buffer is
    overwritten past its end (the semaphore one was 88 bytes of 104: heap corruption in
    pyckpt, seen as segfaults in the garbage collector, and as "bad trailing pad byte"
    under PYTHONMALLOC=debug)."""
    from pyckpt.kinds import sysvipc

    sizes = {c.__name__: ctypes.sizeof(c) for c in (sysvipc._ShmidDs, sysvipc._SemidDs, sysvipc._MsqidDs)}
    assert sizes == {"_ShmidDs": 112, "_SemidDs": 104, "_MsqidDs": 120}
