"""Targets for epoll sets in process trees.  argv[1] is the mode:

prefork [N]  A master without epoll, as nginx or a prefork server runs: it
    listens on a TCP port of 127.0.0.1 and forks N workers (default 2), each
    with two sets of its own:
      loop set   the listening socket   EPOLLIN|EPOLLEXCLUSIVE  data LISTEN+i
                 its control socket (a socketpair, the master holds the other end)
                                        EPOLLIN                 data CTRL+i
      state set  (only looked at by checks, so its ready items never busy the loop)
                 eventfd, count 1       EPOLLIN                 data READY+i  (ready)
                 eventfd, count 0       EPOLLIN|EPOLLET         data IDLE+i   (not ready)
                 pipe read end, 1 byte  EPOLLIN                 data KICK+i   (ready)
                 unix socket, 1 message EPOLLIN                 data SOCK+i   (ready; the
                                        master holds the other end and wrote it)
                 eventfd, count 1       EPOLLIN|EPOLLONESHOT    data ONESHOT+i (fired
                                        before READY: disarmed)
                 eventfd                EPOLLIN                 data MOVED+i, added as
                                        fd N, then dup'ed and N closed
    A worker waits in epoll_wait on its loop set: it answers a connection with
    `worker PID I` and a `check` on its control socket with its own check of
    both sets.  The master prints `READY port=P workers=W1,W2`; on SIGUSR1 it
    asks every worker and prints `CHECK ok` when all are well.

shared  An epoll set inherited across fork and used by parent and child.  The
    parent makes the set E and adds, before the fork:
      eventfd, count 0      EPOLLIN          data P_EFD    (not ready)
      pipe read end, 1 byte EPOLLIN          data P_PIPE   (ready; the parent closes
                                             its copy after the fork: only the child
                                             holds the file)
    the child adds to E, under its own numbers:
      eventfd of its own    EPOLLIN|EPOLLET  data C_EFD    (not ready; only the child
                                             holds it)
      unix socket, 1 message EPOLLIN         data C_SOCK   (ready; the parent holds
                                             the other end and wrote it)
      TCP connection end, data waiting  EPOLLIN  data C_TCP (ready; the parent
                                             holds the other end and wrote it)
      eventfd, count 1      EPOLLIN|EPOLLONESHOT data C_ONESHOT (fired: disarmed)
    and the parent, after the child's: its own eventfd, count 1, EPOLLIN data
    P_READY (ready).  On SIGUSR1 the parent checks E itself (the items as fdinfo
    showed them before, which are ready with which data, an eventfd it writes to
    reported), then asks the child, over a socketpair outside E, to do the same
    from its side with the child's own eventfd; `CHECK ok` when both are well.
    Prints `READY child=C`.

inherited  The plain case: a set made before fork, with an eventfd (EPOLLIN, data
    P_EFD) and a pipe's read end (EPOLLIN|EPOLLET, data P_PIPE), both processes
    holding every file.  The child waits on the set; on SIGUSR1 the parent
    checks the items, writes to the pipe, then to the eventfd, and has the
    child tell what its epoll_wait reported each time (that item alone, with
    its data); the child waits for the parent's word before it waits on the
    set again (the parent reads the eventfd back first).  Prints `READY child=C`.

Every check leaves the files as it found them, so it can be repeated.  A
child exits as soon as its parent changes.
"""

import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from ev_common import EPOLLET, EPOLLEXCLUSIVE, EPOLLIN, EPOLLONESHOT, epoll_add, epoll_create, epoll_items, epoll_wait
import selfcheck

MODE = sys.argv[1]
LISTEN, CTRL, READY, IDLE, KICK, SOCK, ONESHOT, MOVED = (k << 12 for k in range(1, 9))
P_EFD, P_PIPE, P_READY = 0xA1, 0xA2, 0xA3
C_EFD, C_SOCK, C_TCP, C_ONESHOT = 0xC1, 0xC2, 0xC3, 0xC4
ANSWER_TIMEOUT = 10.0


def ready_now(ep: int) -> dict[int, int]:
    """data -> events of what epoll_wait reports ready now."""
    return dict(epoll_wait(ep, 0, 64))


def readable(fd: int) -> bool:
    """Whether the file is readable now, asked with poll() (not through any epoll set)."""
    import select

    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


def ask(s: socket.socket, what: bytes) -> str:
    """Send a request to a child and wait for its one-line answer."""
    s.settimeout(ANSWER_TIMEOUT)
    s.sendall(what)
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            return "the child closed its socket"
        answer += chunk
    return answer.decode().strip()


def expect_ready(ep: int, want: set[int], where: str) -> list[str]:
    got = ready_now(ep)
    if set(got) != want or any(e != EPOLLIN for e in got.values()):
        return [f"{where}: ready {sorted(hex(d) for d in got)}, expected {sorted(hex(d) for d in want)}"]
    return []


def drive(ep: int, efd: int, data: int, others: set[int], where: str) -> list[str]:
    """A write to eventfd `efd` must make `ep` report `data`, and reading it back stop it."""
    bad = []
    os.eventfd_write(efd, 1)
    got = ready_now(ep)
    if got.get(data) != EPOLLIN or set(got) != others | {data}:
        bad.append(f"{where}: after a write to fd {efd}, ready {sorted(hex(d) for d in got)}")
    os.eventfd_read(efd)
    if data in ready_now(ep):
        bad.append(f"{where}: fd {efd} still reported after it was read")
    return bad


# --- prefork ------------------------------------------------------------------------------------

def worker(i: int, master: int, lsock: socket.socket, ctrl: socket.socket, sock: socket.socket) -> None:
    loop = epoll_create()
    epoll_add(loop, lsock.fileno(), EPOLLIN | EPOLLEXCLUSIVE, LISTEN + i)
    epoll_add(loop, ctrl.fileno(), EPOLLIN, CTRL + i)
    state = epoll_create()
    ready = os.eventfd(1, os.EFD_NONBLOCK)
    epoll_add(state, ready, EPOLLIN, READY + i)
    idle = os.eventfd(0, os.EFD_NONBLOCK)
    epoll_add(state, idle, EPOLLIN | EPOLLET, IDLE + i)
    kick_r, kick_w = os.pipe()
    os.write(kick_w, b"k")
    epoll_add(state, kick_r, EPOLLIN, KICK + i)
    epoll_add(state, sock.fileno(), EPOLLIN, SOCK + i)
    oneshot = os.eventfd(1, os.EFD_NONBLOCK)
    epoll_add(state, oneshot, EPOLLIN | EPOLLONESHOT, ONESHOT + i)
    fired = ready_now(state)
    assert fired.get(ONESHOT + i) == EPOLLIN, fired  # fires once: disarmed from now on
    moved = os.eventfd(0, os.EFD_NONBLOCK)
    epoll_add(state, moved, EPOLLIN, MOVED + i)
    number = moved
    moved = os.dup(moved)
    os.close(number)
    expected = {loop: epoll_items(loop), state: epoll_items(state)}
    assert any(t == number for t, _, _ in expected[state])

    def check() -> list[str]:
        bad = []
        for ep, items in expected.items():
            if epoll_items(ep) != items:
                bad.append(f"items of epoll fd {ep}: {epoll_items(ep)} != {items}")
        if os.path.exists(f"/proc/self/fd/{number}"):
            bad.append(f"fd {number} is open again")
        if ready_now(loop):  # nothing waits: no connection, the request was read
            bad.append(f"loop set: ready {ready_now(loop)}")
        always = {READY + i, KICK + i, SOCK + i}  # the disarmed one-shot item stays quiet
        bad += expect_ready(state, always, "state set")
        bad += drive(state, idle, IDLE + i, always, "state set")
        bad += drive(state, moved, MOVED + i, always, "state set")
        os.read(kick_r, 1)
        if KICK + i in ready_now(state) or readable(kick_r):
            bad.append("the kick pipe is still ready after its byte was read")
        os.write(kick_w, b"k")
        bad += expect_ready(state, always, "state set, at the end")
        if not readable(oneshot):
            bad.append("the one-shot eventfd is not readable (so it proves nothing)")
        return bad

    while os.getppid() == master:
        try:
            events = epoll_wait(loop, 200)
        except InterruptedError:  # as after any stop (a dump's freeze too): wait again
            continue
        for data, _ in events:
            if data == LISTEN + i:
                try:
                    conn, _ = lsock.accept()
                except BlockingIOError:  # another worker took it
                    continue
                with conn:
                    conn.sendall(f"worker {os.getpid()} {i}\n".encode())
            elif data == CTRL + i:
                if ctrl.recv(64) != b"check":
                    os._exit(0)  # the master is gone
                try:
                    bad = check()
                except Exception as e:  # noqa: BLE001 -- reported, not fatal
                    bad = [f"exception {e!r}"]
                ctrl.sendall((("FAIL " + "; ".join(bad)) if bad else "ok").encode() + b"\n")
            else:
                print(f"worker {i}: unexpected event data {data:#x}", flush=True)
    os._exit(0)


def prefork(n: int) -> None:
    selfcheck.listen()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    lsock.setblocking(False)
    master = os.getpid()
    ctrls, sockets, workers = [], [], []
    for i in range(n):
        mine, theirs = socket.socketpair()
        d_mine, d_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        d_mine.send(b"hello %d" % i)
        pid = os.fork()
        if pid == 0:
            try:
                for s in ctrls + sockets + [mine, d_mine]:
                    s.close()
                worker(i, master, lsock, theirs, d_theirs)
            except BaseException:  # noqa: BLE001 -- never fall back into the master's code
                import traceback
                traceback.print_exc()
            os._exit(1)
        theirs.close()
        d_theirs.close()
        ctrls.append(mine)
        sockets.append(d_mine)
        workers.append(pid)
    for s in ctrls:  # every worker has made its sets when it answers
        if ask(s, b"check") != "ok":
            sys.exit(f"prefork: a worker failed its first check")
    print(f"READY port={lsock.getsockname()[1]} workers={','.join(map(str, workers))}", flush=True)

    def check() -> list[str]:
        bad = []
        mine = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                mine.append(os.readlink(f"/proc/self/fd/{fd}"))
            except FileNotFoundError:  # listdir's own fd
                pass
        if "anon_inode:[eventpoll]" in mine:
            bad.append("the master has an epoll fd")
        for i, (pid, s) in enumerate(zip(workers, ctrls)):
            answer = ask(s, b"check")
            if answer != "ok":
                bad.append(f"worker {i} ({pid}): {answer}")
        return bad

    selfcheck.serve(check)


# --- shared -------------------------------------------------------------------------------------

def shared() -> None:
    selfcheck.listen()
    ep = epoll_create()
    p_efd = os.eventfd(0, os.EFD_NONBLOCK)
    epoll_add(ep, p_efd, EPOLLIN, P_EFD)
    pipe_r, pipe_w = os.pipe()
    os.write(pipe_w, b"p")
    epoll_add(ep, pipe_r, EPOLLIN, P_PIPE)
    cmd_parent, cmd_child = socket.socketpair()
    u_parent, u_child = socket.socketpair()
    lsock = socket.create_server(("127.0.0.1", 0))
    t_parent = socket.create_connection(lsock.getsockname())
    t_child, _ = lsock.accept()
    lsock.close()
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        try:
            cmd_parent.close()
            u_parent.close()
            t_parent.close()
            os.close(pipe_w)
            os.close(p_efd)  # the parent's item stays: the parent holds the file
            c_efd = os.eventfd(0, os.EFD_NONBLOCK)
            epoll_add(ep, c_efd, EPOLLIN | EPOLLET, C_EFD)
            epoll_add(ep, u_child.fileno(), EPOLLIN, C_SOCK)
            epoll_add(ep, t_child.fileno(), EPOLLIN, C_TCP)
            oneshot = os.eventfd(1, os.EFD_NONBLOCK)
            epoll_add(ep, oneshot, EPOLLIN | EPOLLONESHOT, C_ONESHOT)
            assert ready_now(ep).get(C_ONESHOT) == EPOLLIN  # fires once: disarmed from now on
            cmd_child.sendall(b"added\n")
            child_loop(parent, ep, cmd_child, c_efd, oneshot, pipe_r, u_child, t_child)
        except BaseException:  # noqa: BLE001 -- never fall back into the parent's code
            import traceback
            traceback.print_exc()
        os._exit(1)
    cmd_child.close()
    u_child.close()
    t_child.close()
    os.close(pipe_r)  # only the child holds the pipe's read end now: E's item lives on in it
    cmd_parent.settimeout(ANSWER_TIMEOUT)
    if cmd_parent.recv(64) != b"added\n":
        sys.exit("shared: the child did not add its items")
    u_parent.send(b"u")
    t_parent.sendall(b"t")
    p_ready = os.eventfd(1, os.EFD_NONBLOCK)
    epoll_add(ep, p_ready, EPOLLIN, P_READY)
    expected = epoll_items(ep)
    assert len(expected) == 7, expected
    deadline = time.monotonic() + ANSWER_TIMEOUT  # the TCP byte arrives (loopback: at once)
    while set(ready_now(ep)) != {P_PIPE, C_SOCK, C_TCP, P_READY} and time.monotonic() < deadline:
        time.sleep(0.01)
    print(f"READY child={child}", flush=True)

    def check() -> list[str]:
        bad = []
        if epoll_items(ep) != expected:
            bad.append(f"parent: items {epoll_items(ep)} != {expected}")
        always = {P_PIPE, C_SOCK, C_TCP, P_READY}
        bad += expect_ready(ep, always, "parent")
        bad += drive(ep, p_efd, P_EFD, always, "parent")
        answer = ask(cmd_parent, b"check " + json.dumps(expected).encode())
        if answer != "ok":
            bad.append(f"child {child}: {answer}")
        bad += expect_ready(ep, always, "parent, after the child's check")
        return bad

    selfcheck.serve(check)


def child_loop(parent, ep, cmd, c_efd, oneshot, pipe_r, u_child, t_child) -> None:
    cmd.settimeout(0.2)
    while os.getppid() == parent:
        try:
            req = cmd.recv(4096)
        except TimeoutError:
            continue
        if not req.startswith(b"check "):
            os._exit(0)  # the parent is gone
        expected = [tuple(i) for i in json.loads(req[6:])]
        bad = []
        try:
            if epoll_items(ep) != expected:
                bad.append(f"items {epoll_items(ep)} != {expected}")
            always = {P_PIPE, C_SOCK, C_TCP, P_READY}
            bad += expect_ready(ep, always, "child")
            bad += drive(ep, c_efd, C_EFD, always, "child")
            if not (readable(oneshot) and readable(pipe_r) and readable(u_child.fileno())
                    and readable(t_child.fileno())):
                bad.append("a file the child holds is not readable")
        except Exception as e:  # noqa: BLE001 -- reported, not fatal
            bad.append(f"exception {e!r}")
        cmd.sendall((("FAIL " + "; ".join(bad)) if bad else "ok").encode() + b"\n")
    os._exit(0)


# --- inherited ----------------------------------------------------------------------------------

def inherited() -> None:
    selfcheck.listen()
    ep = epoll_create()
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    epoll_add(ep, efd, EPOLLIN, P_EFD)
    pipe_r, pipe_w = os.pipe()
    epoll_add(ep, pipe_r, EPOLLIN | EPOLLET, P_PIPE)
    cmd_parent, cmd_child = socket.socketpair()
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        try:
            while os.getppid() == parent:
                try:
                    got = epoll_wait(ep, 200)
                except InterruptedError:  # as after any stop (a dump's freeze too)
                    continue
                if got:
                    if P_PIPE in dict(got):
                        os.read(pipe_r, 1)
                    cmd_child.sendall(f"{sorted(got)}\n".encode())
                    cmd_child.recv(1)  # the parent has seen it (and read the eventfd back)
        except BaseException:  # noqa: BLE001 -- never fall back into the parent's code
            import traceback
            traceback.print_exc()
        os._exit(0)
    expected = epoll_items(ep)
    print(f"READY child={child}", flush=True)

    def check() -> list[str]:
        bad = []
        if epoll_items(ep) != expected:
            bad.append(f"items {epoll_items(ep)} != {expected}")
        os.write(pipe_w, b"x")  # edge-triggered: reported once, the child reads it
        answer = ask(cmd_parent, b"")
        if answer != str([(P_PIPE, EPOLLIN)]):
            bad.append(f"the pipe: the child's epoll_wait reported {answer}")
        cmd_parent.sendall(b"n")
        os.eventfd_write(efd, 1)  # level-triggered: reported until the parent reads it
        answer = ask(cmd_parent, b"")
        if answer != str([(P_EFD, EPOLLIN)]):
            bad.append(f"the eventfd: the child's epoll_wait reported {answer}")
        os.eventfd_read(efd)
        cmd_parent.sendall(b"n")
        return bad

    selfcheck.serve(check)


if MODE == "prefork":
    prefork(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
elif MODE == "shared":
    shared()
elif MODE == "inherited":
    inherited()
else:
    sys.exit(f"unknown mode {MODE}")
