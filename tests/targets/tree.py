"""A tree of three processes made with fork (no exec): root -> A -> B.

Before forking, the root makes a pipe (1 MiB) and a MAP_SHARED|MAP_ANONYMOUS
page of 8-byte slots.  A puts itself in its own process group (B, forked
after that, is in A's group); all three stay in the root's session (spawn
makes the root a session leader).  Every 20 ms each process bumps its own
counter slot, and A and B copy into further slots what they see of the
others' counters and what getpid()/getppid() tell them — so the root sees,
through the shared page, that the sharing works in both directions and that
the tree is linked as it was.  Nothing here reads /proc, so the checks hold
inside a fresh PID namespace too.

B writes numbered 100-byte lines ("seq N ...") into the pipe every 10 ms as
long as fewer than HIGH bytes are unread; the root reads only when asked,
and never below KEEP bytes, so the pipe always holds data that was written
and not yet read (about 8-12 KB).  The root checks that every line it ever
read follows the one before: nothing lost, nothing repeated.

The root prints `READY root=R a=A b=B` and answers SIGUSR1 through
selfcheck.serve.  With an argument, READY and CHECK lines go to that file
(opened O_APPEND, so several restored copies can share it), else to stdout.
A and B exit as soon as their parent changes, so nothing outlives the tree;
B also asks for SIGKILL when A dies (PR_SET_PDEATHSIG) and reports what
PR_GET_PDEATHSIG says, so the root sees it kept across a restore.
"""

import ctypes
import fcntl
import mmap
import os
import signal
import sys
import termios
import time

import selfcheck

F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
PIPE_SIZE = 1 << 20
LINE = 100
HIGH = 12 * 1024  # B writes only while fewer bytes than this are unread
KEEP = 8 * 1024  # the root leaves at least this much unread

# slots of the shared page
ROOT, A_CNT, B_CNT = 0, 1, 2  # each process's own counter
A_SEES_ROOT, B_SEES_A, B_SEES_ROOT = 3, 4, 5  # what A and B read of the others' counters
A_PID, A_PPID, B_PID, B_PPID = 6, 7, 8, 9  # getpid()/getppid() of A and B, refreshed every round
A_PGRP, B_PGRP, A_SID, B_SID = 10, 11, 12, 13
B_PID_FROM_A = 14  # fork's return value in A
B_PDEATHSIG = 15  # prctl(PR_GET_PDEATHSIG) in B, which asks for SIGKILL when A dies
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2
libc = ctypes.CDLL(None, use_errno=True)


def unread(fd: int) -> int:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


def line(n: int) -> bytes:
    head = f"seq {n} ".encode()
    return head + b"." * (LINE - 1 - len(head)) + b"\n"


def child_loop(step, orig_ppid: int, period: float = 0.02) -> None:
    """Run step() every `period` s until the parent changes; then exit (never return)."""
    try:
        while os.getppid() == orig_ppid:
            step()
            time.sleep(period)
    except BrokenPipeError:  # the root, the pipe's only reader, is gone
        os._exit(0)
    except BaseException:  # noqa: BLE001 -- report on stderr, never fall back into the root's code
        import traceback
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def run_b(slots, w: int, orig_ppid: int) -> None:
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    state = {"seq": 0, "tick": 0}

    def step():
        if unread(w) < HIGH:
            os.write(w, line(state["seq"]))  # < PIPE_BUF: atomic
            state["seq"] += 1
        state["tick"] += 1
        if state["tick"] % 2 == 0:  # B's loop runs every 10 ms, its counter moves every 20 ms
            slots[B_CNT] += 1
        slots[B_SEES_A] = slots[A_CNT]
        slots[B_SEES_ROOT] = slots[ROOT]
        slots[B_PID] = os.getpid()
        slots[B_PPID] = os.getppid()
        slots[B_PGRP] = os.getpgrp()
        slots[B_SID] = os.getsid(0)
        sig = ctypes.c_int(-1)
        libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(sig), 0, 0, 0)
        slots[B_PDEATHSIG] = sig.value

    child_loop(step, orig_ppid, period=0.01)


def run_a(slots, r: int, w: int, orig_ppid: int) -> None:
    os.setpgid(0, 0)
    os.close(r)
    me = os.getpid()
    b = os.fork()
    if b == 0:
        run_b(slots, w, me)
    os.close(w)
    slots[B_PID_FROM_A] = b

    def step():
        slots[A_CNT] += 1
        slots[A_SEES_ROOT] = slots[ROOT]
        slots[A_PID] = os.getpid()
        slots[A_PPID] = os.getppid()
        slots[A_PGRP] = os.getpgrp()
        slots[A_SID] = os.getsid(0)

    child_loop(step, orig_ppid)


def main() -> None:
    out = open(sys.argv[1], "a", buffering=1) if len(sys.argv) > 1 else sys.stdout
    selfcheck.listen()  # before READY, so that no request is lost
    mem = mmap.mmap(-1, 4096, mmap.MAP_SHARED)  # MAP_SHARED|MAP_ANONYMOUS
    slots = memoryview(mem).cast("Q")  # aligned 8-byte loads and stores
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    root = os.getpid()
    sid = os.getsid(0)
    a = os.fork()
    if a == 0:
        run_a(slots, r, w, root)
    os.close(w)
    try:
        os.setpgid(a, a)  # as A does itself: whichever runs first
    except PermissionError:
        pass

    deadline = time.monotonic() + 20
    # READY once the pipe holds more than the root keeps unread: a first check finds lines
    while not (slots[A_CNT] and slots[B_CNT] and slots[B_PID_FROM_A] and unread(r) > KEEP + 2 * LINE):
        slots[ROOT] += 1
        if time.monotonic() > deadline:
            sys.exit(f"tree: the children did not start: {list(slots[:16])}")
        time.sleep(0.02)
    b = slots[B_PID_FROM_A]
    print(f"READY root={root} a={a} b={b}", file=out, flush=True)

    state = {"next": 0, "partial": b"", "last": None}

    def read_pipe() -> int:
        """Read what is unread beyond KEEP bytes; check the numbering; return lines read."""
        n = unread(r) - KEEP
        data = b""
        while len(data) < n:
            data += os.read(r, n - len(data))
        data = state["partial"] + data
        *lines, state["partial"] = data.split(b"\n")
        for ln in lines:
            want = line(state["next"])[:-1]
            if ln != want:
                raise AssertionError(f"pipe: expected line {want[:12]!r}, got {ln[:40]!r}")
            state["next"] += 1
        return len(lines)

    def check():
        bad = []
        # the tree as the processes see it (namespace-relative PIDs: no /proc here)
        if os.getsid(0) != root or sid != root:
            bad.append(f"root is not a session leader: sid {os.getsid(0)}")
        if os.getpgrp() != root:
            bad.append(f"root pgrp {os.getpgrp()}")
        for name, pid in (("A", a), ("B", b)):
            try:
                os.kill(pid, 0)
                if os.getsid(pid) != root:
                    bad.append(f"{name} {pid}: sid {os.getsid(pid)}, expected {root}")
                if os.getpgid(pid) != a:
                    bad.append(f"{name} {pid}: pgid {os.getpgid(pid)}, expected {a}")
            except ProcessLookupError:
                bad.append(f"{name} {pid} is gone")
        try:
            got = os.waitpid(-1, os.WNOHANG)
            if got != (0, 0):
                bad.append(f"a child of the root ended: {got}")
        except ChildProcessError:
            bad.append("the root has no children")
        if fcntl.fcntl(r, F_GETPIPE_SZ) != PIPE_SIZE:
            bad.append(f"pipe size {fcntl.fcntl(r, F_GETPIPE_SZ)}")

        slots[B_PDEATHSIG] = 0  # B writes it again every round
        # shared memory: every slot written by another process moves (give them 3 s)
        moving = {"A": A_CNT, "B": B_CNT, "A's view of root": A_SEES_ROOT,
                  "B's view of A": B_SEES_A, "B's view of root": B_SEES_ROOT}
        last = state["last"] or {k: -1 for k in moving}
        new_lines = read_pipe()
        deadline = time.monotonic() + 3
        while True:
            slots[ROOT] += 1
            stuck = [k for k, i in moving.items() if slots[i] <= last[k]]
            if not stuck and new_lines:
                break
            if time.monotonic() > deadline:
                if stuck:
                    bad.append(f"shared counters not moving: {', '.join(stuck)} "
                               f"(slots {list(slots[:6])})")
                if not new_lines:
                    bad.append(f"no new line in the pipe ({unread(r)} bytes unread)")
                break
            time.sleep(0.02)
            new_lines += read_pipe()
        state["last"] = {k: slots[i] for k, i in moving.items()}

        # what A and B tell about themselves, fresh since their counters moved
        expect = {A_PID: a, A_PPID: root, A_PGRP: a, A_SID: root,
                  B_PID: b, B_PPID: a, B_PGRP: a, B_SID: root}
        names = {A_PID: "A getpid", A_PPID: "A getppid", A_PGRP: "A getpgrp", A_SID: "A getsid",
                 B_PID: "B getpid", B_PPID: "B getppid", B_PGRP: "B getpgrp", B_SID: "B getsid"}
        for i, want in expect.items():
            if slots[i] != want:
                bad.append(f"{names[i]} = {slots[i]}, expected {want}")
        deadline = time.monotonic() + 3
        while slots[B_PDEATHSIG] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if slots[B_PDEATHSIG] != signal.SIGKILL:
            bad.append(f"B's parent-death signal is {slots[B_PDEATHSIG]}, expected SIGKILL")
        n = unread(r)
        if not KEEP - LINE <= n <= HIGH + LINE:  # B may still be catching up after a read
            bad.append(f"{n} bytes unread in the pipe")
        return bad

    class _TickingTime:  # serve's 20 ms loop bumps the root's counter as it sleeps
        @staticmethod
        def sleep(s):
            slots[ROOT] += 1
            time.sleep(s)

    selfcheck.time = _TickingTime
    selfcheck.serve(check, file=out)


if __name__ == "__main__":
    main()
