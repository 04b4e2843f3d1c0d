"""A kernel of a real `jupyter server` is saved with its tab open and comes back
under the same kernel id (issue 13): the server extension pyckpt.jupyter
(enabled by the install's jupyter_server_config.d file, not by this test), the
`pyckpt jupyter` command, cells run over a websocket that stays open."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import psutil
import pytest

import pyckpt

websocket = pytest.importorskip("websocket")  # websocket-client (the test extra)
pytest.importorskip("jupyter_server")

PYCKPT = [sys.executable, "-m", "pyckpt"]
# IPython's note (print(a, b, c) from its history thread: its words may come as separate
# stream messages, so as separate lines)
HISTORY_NOTE = ("ERROR! Session/line number was not unique in", "database. History logging moved",
                "History logging moved to new session")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    def __init__(self, tmp):
        self.token = secrets.token_hex(16)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
                        JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
                        IPYTHONDIR=str(tmp / "ipython"))
        (tmp / "root").mkdir()
        self.log = tmp / "server.log"
        with open(self.log, "wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                 "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                 "--ServerApp.port_retries=0", f"--ServerApp.token={self.token}",
                 f"--ServerApp.root_dir={tmp / 'root'}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=self.env)
        self.kernel_pids: set[int] = set()
        deadline = time.monotonic() + 60
        while True:
            try:
                self.api("GET", "api/pyckpt")
                break
            except Exception:
                if self.popen.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("the server did not start with the pyckpt endpoint: "
                                         + self.log.read_text()[-3000:]) from None
                time.sleep(0.2)

    def api(self, method, path, body=None, token=None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Authorization", f"token {self.token if token is None else token}")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"null")

    def kernel_pid(self) -> int | None:
        """The server's kernel process (a child of it running ipykernel), if one runs."""
        for c in psutil.Process(self.popen.pid).children():
            try:
                if c.status() != psutil.STATUS_ZOMBIE and "ipykernel_launcher" in " ".join(c.cmdline()):
                    self.kernel_pids.add(c.pid)
                    return c.pid
            except psutil.NoSuchProcess:
                pass
        return None

    def cli(self, *args, server=True, token=None):
        more = ["--server", self.url, "--token", self.token if token is None else token] if server else []
        return subprocess.run([*PYCKPT, "jupyter", *args, *more], capture_output=True, text=True,
                              timeout=300, env=self.env)

    def stop(self):
        try:
            for k in self.api("GET", "api/kernels"):
                self.api("DELETE", f"api/kernels/{k['id']}")
        except Exception:
            pass
        self.kernel_pid()
        try:  # and what else it started: the PID-namespace init of a copy (--new-id)
            self.kernel_pids.update(c.pid for c in psutil.Process(self.popen.pid).children())
        except psutil.NoSuchProcess:
            pass
        pids = [self.popen.pid, *self.kernel_pids]
        for pid in pids:  # the server, then kernels it left (now children of this subreaper)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if pid == self.popen.pid:
                self.popen.wait()
        for pid in pids[1:]:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


class Tab:
    """A notebook tab: one websocket on the kernel's channels."""

    def __init__(self, server: JupyterServer, kernel_id: str):
        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels?session_id={self.session}",
            header=[f"Authorization: token {server.token}"], timeout=60)
        self.ws.settimeout(1)  # the handshake waits for the kernel's answer; reads poll

    def run(self, code: str, timeout: float = 60, retry_every: float = 5) -> list[str]:
        """Run a cell; its printed lines.  A request sent while ZMQ reconnects to a restored
        kernel may be lost (as for any kernel restart): sent again after `retry_every`."""
        deadline = time.monotonic() + timeout
        while True:
            msg_id = uuid.uuid4().hex
            self.ws.send(json.dumps({
                "header": {"msg_id": msg_id, "username": "test", "session": self.session,
                           "msg_type": "execute_request", "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": True,
                            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
            out, status, idle = [], None, False
            again = time.monotonic() + retry_every
            while time.monotonic() < min(again, deadline) or (status and not idle):
                try:
                    msg = json.loads(self.ws.recv())
                except websocket.WebSocketTimeoutException:
                    if time.monotonic() > deadline:
                        break
                    continue
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    out.append(f"ERROR {content['ename']}: {content['evalue']}")
                elif kind == "execute_reply":
                    status = content["status"]
                elif kind == "status" and content["execution_state"] == "idle":
                    idle = True
                if status and idle:
                    # IPython's note when a kernel started meanwhile took the saved kernel's
                    # history session (history.sqlite is shared): it logs to a new one
                    return [line for line in "".join(out).splitlines()
                            if not line.strip().startswith(HISTORY_NOTE)]
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer to {code!r} within {timeout} s")

    def close(self):
        self.ws.close()


STATE = """
import collections
table = {i: i * i for i in range(50_000)}
def greet(name, punct='!'):
    return f'hello {name}{punct}'
class Counter:
    def __init__(self):
        self.n = 0
    def bump(self):
        self.n += 1
        return self.n
counter = Counter()
for _ in range(41):
    counter.bump()
notes = collections.deque(['a', 'b'])
print('built', len(table), counter.n)
"""
CHECK = ("print(len(table), table[49_999], greet('again'), counter.bump(), list(notes), "
         "'later' in globals())")
WANT = [f"50000 {49_999 ** 2} hello again! 42 ['a', 'b'] False"]


@pytest.fixture
def server(tmp_path):
    s = JupyterServer(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def _wait(what, cond, timeout=60):
    deadline = time.monotonic() + timeout
    while not (v := cond()):
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.1)
    return v


def test_kernel_saved_with_its_tab_open_comes_back_under_its_id(server, tmp_path):
    kid = server.api("POST", "api/kernels", {"name": "python3"})["id"]
    tab = Tab(server, kid)
    assert tab.run(STATE) == ["built 50000 41"]
    pid = _wait("the kernel process", server.kernel_pid)

    # 1. saved while it runs, the tab open; it runs on, on the same channels
    first = tmp_path / "first"
    r = server.cli("save", kid, str(first))
    assert r.returncode == 0, r.stderr
    assert f"saved kernel {kid} (PID {pid})" in r.stdout and "it runs on" in r.stdout, r.stdout
    assert tab.run("later = 1\nprint(counter.bump())") == ["42"]
    assert server.kernel_pid() == pid

    # 2. it dies (as by the OOM killer); the server's restarter starts an empty one.  A
    # tab open across a crash and restart may be left without its shell connection, with
    # no pyckpt involved (1 of 2 tries here): the user reloads it, the test opens another
    tab.close()
    os.kill(pid, signal.SIGKILL)
    _wait("a new kernel", lambda: server.kernel_pid() not in (None, pid))
    fresh = server.kernel_pid()
    tab = Tab(server, kid)
    assert tab.run("print('table' in globals())", timeout=90) == ["False"]

    # restoring over a running kernel must be asked for
    r = server.cli("restore", str(first))
    assert r.returncode != 0 and f"kernel {kid} runs on this server (PID {fresh})" in r.stderr, r.stderr
    assert "--replace" in r.stderr
    r = server.cli("restore", str(first), "--replace")
    assert r.returncode == 0, r.stderr
    assert f"restored kernel {kid} (python3) as PID {pid}" in r.stdout, r.stdout
    assert server.kernel_pid() == pid
    # the restore answered once this tab's IOPub socket and the server's activity watcher
    # were connected again (reset by the restore, ZMQ reconnects each socket on its own
    # timer): the cell below, sent at once, ran before, its output lost (1 run in 2)
    assert f"kernel {kid}: 2 IOPub subscriber(s) connected" in server.log.read_text()
    assert tab.run(CHECK) == WANT  # the same tab: the state of the save, not of later
    assert [k["id"] for k in server.api("GET", "api/kernels")] == [kid]

    # 3. saved and stopped: the id stays, no new kernel is started meanwhile
    second = tmp_path / "second"
    r = server.cli("save", kid, str(second), "--stop")
    assert r.returncode == 0, r.stderr
    assert "it has ended" in r.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    time.sleep(4)  # longer than the restarter's 3 s poll
    assert server.kernel_pid() is None, "the server restarted a saved, stopped kernel"
    assert [k["id"] for k in server.api("GET", "api/kernels")] == [kid]

    r = server.cli("list", server=False)  # the server found as `jupyter server list` does
    assert r.returncode == 0, r.stderr
    listed = r.stdout.splitlines()
    assert any(line.startswith(f"{second}: kernel {kid} (python3)") and "stopped" in line
               for line in listed), r.stdout
    assert any(line.startswith(f"{first}: kernel {kid} (python3)") for line in listed), r.stdout

    r = server.cli("restore", str(second))
    assert r.returncode == 0, r.stderr
    assert f"restored kernel {kid} (python3) as PID {pid}" in r.stdout
    assert tab.run(CHECK) == [WANT[0].replace(" 42 ", " 43 ")]  # counter.bump() ran once more
    other = Tab(server, kid)  # a tab opened now
    assert other.run("print(greet('tab', '?'))") == ["hello tab?"]
    tab.close()
    other.close()


def test_lazy_restore(server, tmp_path):
    """restore --lazy: the kernel runs before its memory is in (pages on first touch)."""
    kid = server.api("POST", "api/kernels", {"name": "python3"})["id"]
    tab = Tab(server, kid)
    assert tab.run(STATE) == ["built 50000 41"]
    assert tab.run("blob = bytes(range(256)) * (1 << 18)\nprint(len(blob))") == [str(64 << 20)]
    r = server.cli("save", kid, str(tmp_path / "saved"), "--stop")
    assert r.returncode == 0, r.stderr
    r = server.cli("restore", str(tmp_path / "saved"), "--lazy")
    assert r.returncode == 0, r.stderr
    m = re.search(r"\(lazily: its memory comes in as it is touched, served by PID (\d+)\)$",
                  r.stdout.strip())
    assert m, r.stdout
    handler = int(m.group(1))  # pyckpt's page handler, which exits once every page is in
    assert tab.run(CHECK) == WANT
    assert tab.run("print(blob == bytes(range(256)) * (1 << 18))") == ["True"]
    _wait("the handler's end", lambda: not psutil.pid_exists(handler)
          or psutil.Process(handler).status() == psutil.STATUS_ZOMBIE)
    tab.close()


def test_bad_input_is_one_clear_error(server, tmp_path):
    kid = server.api("POST", "api/kernels", {"name": "python3"})["id"]
    tab = Tab(server, kid)
    assert tab.run("print(6 * 7)") == ["42"]

    unknown = str(uuid.uuid4())
    r = server.cli("save", unknown, str(tmp_path / "x"))
    assert r.returncode == 1 and f"no kernel {unknown} on this server (its kernels: {kid})" in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr

    r = server.cli("save", kid, str(tmp_path / "x"), token="wrong")
    assert r.returncode == 1 and "refused the token given (HTTP 403)" in r.stderr, r.stderr

    closed = _free_port()
    r = subprocess.run([*PYCKPT, "jupyter", "list", "--server", f"http://127.0.0.1:{closed}/"],
                       capture_output=True, text=True, timeout=60, env=server.env)
    assert r.returncode == 1, r.stderr
    assert f"no Jupyter server answers at http://127.0.0.1:{closed}/" in r.stderr

    r = server.cli("restore", str(tmp_path))
    assert r.returncode == 6 and "is not a saved Jupyter kernel" in r.stderr, r.stderr

    # a cell that runs longer than the save waits: refused, the kernel untouched
    tab.ws.send(json.dumps({
        "header": {"msg_id": "sleeper", "username": "test", "session": tab.session,
                   "msg_type": "execute_request", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": "import time; time.sleep(4)", "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False}}))
    time.sleep(0.5)
    r = server.cli("save", kid, str(tmp_path / "busy"), "--timeout", "1")
    assert r.returncode == 1 and f"kernel {kid} has been busy running a cell for over 1 s" in r.stderr, \
        r.stderr
    assert not (tmp_path / "busy").exists()
    assert tab.run("print(6 * 7)", timeout=30) == ["42"]

    # --replace: a restore that would fail anyway (a file the kernel writes changed since
    # the save) is refused before the running kernel is ended
    notes = tmp_path / "notes.txt"
    assert tab.run(f"notes = open({str(notes)!r}, 'w')\nnotes.write('saved\\n'); notes.flush()") == []
    r = server.cli("save", kid, str(tmp_path / "with-file"))
    assert r.returncode == 0, r.stderr
    pid = server.kernel_pid()
    with open(notes, "a") as f:
        f.write("written by someone else\n")
    r = server.cli("restore", str(tmp_path / "with-file"), "--replace")
    assert r.returncode == 9 and f"file '{notes}' changed since the dump" in r.stderr, r.stderr
    assert server.kernel_pid() == pid and tab.run("print(6 * 7)") == ["42"]
    assert tab.run("notes.close()") == []

    # a port of the saved kernel taken meanwhile: named; the id stays, stopped
    saved = tmp_path / "saved"
    r = server.cli("save", kid, str(saved), "--stop")
    assert r.returncode == 0, r.stderr
    port = json.loads((saved / "kernel.json").read_text())["connection"]["shell_port"]
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        r = server.cli("restore", str(saved))
    finally:
        squatter.close()
    assert r.returncode != 0 and str(port) in r.stderr, r.stderr
    assert f"pyckpt jupyter restore {saved} --new-id" in r.stderr, r.stderr  # the way out
    assert r.stderr.count("\n") == 1, r.stderr
    assert [k["id"] for k in server.api("GET", "api/kernels")] == [kid]
    r = server.cli("restore", str(saved))  # once it is free
    assert r.returncode == 0, r.stderr
    assert tab.run("print(6 * 7)", timeout=30) == ["42"]
    tab.close()


def test_a_copy_under_a_new_id_beside_the_original(server, tmp_path):
    """restore --new-id: the saved kernel comes back as a new kernel (new id, free ports,
    the saved key) while the original runs on: both answer cells, each with its own state."""
    kid = server.api("POST", "api/kernels", {"name": "python3"})["id"]
    tab = Tab(server, kid)
    assert tab.run(STATE) == ["built 50000 41"]
    pid = _wait("the kernel process", server.kernel_pid)
    point = tmp_path / "point"
    r = server.cli("save", kid, str(point))
    assert r.returncode == 0, r.stderr
    assert tab.run("later = 1\nprint(counter.bump())") == ["42"]

    # the kernels listed all the while (a tab polls them): never an error
    failed, done = [], threading.Event()

    def poll():
        while not done.is_set():
            try:
                server.api("GET", "api/kernels")
            except urllib.error.HTTPError as e:
                failed.append(e.code)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        r = server.cli("restore", str(point), "--new-id")
    finally:
        done.set()
        poller.join(60)
    assert r.returncode == 0, r.stderr
    assert not failed, failed
    m = re.match(rf"restored kernel {kid} as a new kernel ([0-9a-f-]+) \(python3\), PID (\d+), "
                 r"ports (\d+) (\d+) (\d+) (\d+) (\d+)$", r.stdout.strip())
    assert m, r.stdout
    new, copy_pid = m.group(1), int(m.group(2))
    server.kernel_pids.add(psutil.Process(copy_pid).ppid())  # its PID namespace's init
    assert new != kid and sorted(k["id"] for k in server.api("GET", "api/kernels")) == sorted([kid, new])
    saved = json.loads((point / "kernel.json").read_text())["connection"]
    ports = [int(p) for p in m.groups()[2:]]
    assert not set(ports) & {saved[p] for p in ("shell_port", "iopub_port", "stdin_port",
                                                 "control_port", "hb_port")}
    assert server.kernel_pid() == pid  # the original runs on, on its own ports

    copy = Tab(server, new)
    assert copy.run(CHECK) == WANT  # the state of the save
    assert tab.run(CHECK) == [WANT[0].replace(" 42 ", " 43 ").replace("False", "True")]
    assert copy.run("who = 'copy'") == [] and tab.run("who = 'original'") == []
    assert copy.run("print(who, counter.bump())") == ["copy 43"]
    assert tab.run("print(who, counter.bump())") == ["original 44"]
    # a history session of its own (the original writes the saved one's)
    session = "print(get_ipython().history_manager.session_number)"
    assert copy.run(session) != tab.run(session)
    # it knows its new connection file (%connect_info, the %pyckpt magic's kernel id)
    assert copy.run("from ipykernel import get_connection_file as f; import os; "
                    "print(os.path.basename(f()))") == [f"kernel-{new}.json"]
    # a forked subprocess's output reaches the copy's own tab (through IOPub's pipe, whose
    # port moved too), not the original's
    fork = ("import os, sys, time\nif os.fork() == 0:\n    print('from the child of', who)\n"
            "    sys.stdout.flush(); time.sleep(0.5); os._exit(0)\nos.wait()\ntime.sleep(0.5)")
    assert copy.run(fork) == ["from the child of copy"]
    assert tab.run(fork) == ["from the child of original"]
    # it cannot be saved yet (pyckpt would save it under its PID here, which is not its own)
    r = server.cli("save", new, str(tmp_path / "of-the-copy"))
    assert r.returncode == 1 and f"kernel {new} runs in a PID namespace of its own" in r.stderr, \
        r.stderr
    time.sleep(2.5)  # its parent poller (every second) took pyckpt's init for its parent
    assert copy.run("print(os.getppid())") == ["1"]
    # the server owns it: shutting it down ends it, the original runs on
    copy.close()
    server.api("DELETE", f"api/kernels/{new}")
    _wait("the copy's end", lambda: not psutil.pid_exists(copy_pid)
          or psutil.Process(copy_pid).status() == psutil.STATUS_ZOMBIE)
    assert tab.run("print(who)") == ["original"]
    assert [k["id"] for k in server.api("GET", "api/kernels")] == [kid]
    tab.close()


def _size(path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(path) for f in files)


def test_incremental_save_after_a_small_change(server, tmp_path):
    """save --parent PREV stores what changed since PREV: after a cell that rewrote 1 % of
    a 128 MiB state, the image is a small part of the full one, and restores the state of
    its own save; the magic's save after a restore builds on the image restored."""
    kid = server.api("POST", "api/kernels", {"name": "python3"})["id"]
    tab = Tab(server, kid)
    digest = "print(hashlib.sha256(state).hexdigest()[:16], mark)"
    (before,) = tab.run(f"import os, hashlib\nstate = bytearray(os.urandom(128 << 20))\n"
                        f"mark = 'full'\n{digest}", timeout=120)
    full = tmp_path / "full"
    r = server.cli("save", kid, str(full))
    assert r.returncode == 0, r.stderr
    (after,) = tab.run(f"state[:len(state) // 100] = os.urandom(len(state) // 100)\n"
                       f"mark = 'incremental'\n{digest}")
    assert after.split()[0] != before.split()[0]
    inc = tmp_path / "inc"
    r = server.cli("save", kid, str(inc), "--parent", str(full), "--stop")
    assert r.returncode == 0, r.stderr
    assert f"(incremental on {full})" in r.stdout, r.stdout
    # 1.3 MiB of the state changed: the rest of it is read from the parent.  The kernel's
    # own memory (heap, arenas: a cell and the garbage collector write a few bytes of
    # most of its pieces) is stored only in the pages that changed: seen 11.5 MiB in all
    # of 171 MiB full (whole 256 KiB pieces: ~31 MiB)
    kept = pyckpt.open_image(inc / "image").summary()["inherited_bytes"]
    print(f"incremental image {_size(inc) / 2**20:.1f} MiB, {_size(inc) / _size(full):.1%} of the "
          f"full {_size(full) / 2**20:.1f} MiB; {kept / 2**20:.1f} MiB kept in the parent")
    assert kept > 0.97 * (128 << 20) and _size(inc) < _size(full) - (150 << 20)

    r = server.cli("list")  # the chain
    line = next(line for line in r.stdout.splitlines() if line.startswith(f"{inc}: "))
    assert line.endswith(f", stopped, incremental on {full}"), r.stdout

    r = server.cli("restore", str(inc))
    assert r.returncode == 0, r.stderr
    assert tab.run(digest) == [after]
    # the magic's save after that restore is incremental on the image restored
    assert tab.run("%load_ext pyckpt\n%pyckpt save again") == [
        "pyckpt: saving this kernel as again once this cell has run"]
    image_dir = server.api("GET", "api/pyckpt")["image_dir"]
    again = _wait("the magic's save", lambda: next(
        (i for i in server.api("GET", "api/pyckpt/images") if i["name"] == "again"), None))
    assert again["parent"] == str(inc) and again["path"] == os.path.join(image_dir, "again")
    # (the kernel ran the magic's import and more cells since: its heap, stored again,
    # grew; seen 47 MiB of 164 MiB full; the 128 MiB state itself stays in the parents)
    assert again["size"] < _size(full) - (100 << 20), again
    r = server.cli("save", kid, str(tmp_path / "x"), "--parent", str(tmp_path))
    assert r.returncode == 6 and "is not a saved Jupyter kernel" in r.stderr, r.stderr
    tab.close()


def test_restored_by_another_server_tomorrow(tmp_path):
    """Saved and stopped, the server ends; a new server (another PID: not the kernel's
    JPY_PARENT_PID) restores it under the same id, which it did not know, through the
    provisioner; the kernel does not shut itself down ("Parent appears to have exited")."""
    first = JupyterServer(tmp_path / "one") if (tmp_path / "one").mkdir() is None else None
    try:
        kid = first.api("POST", "api/kernels", {"name": "python3"})["id"]
        tab = Tab(first, kid)
        assert tab.run(STATE) == ["built 50000 41"]
        pid = _wait("the kernel process", first.kernel_pid)
        r = first.cli("save", kid, str(tmp_path / "yesterday"), "--stop")
        assert r.returncode == 0, r.stderr
        tab.close()
    finally:
        first.stop()
    (tmp_path / "two").mkdir()
    second = JupyterServer(tmp_path / "two")
    try:
        assert second.popen.pid != first.popen.pid
        r = second.cli("restore", str(tmp_path / "yesterday"))
        assert r.returncode == 0, r.stderr
        assert f"restored kernel {kid} (python3) as PID {pid}" in r.stdout
        assert second.kernel_pid() == pid
        model = second.api("GET", f"api/kernels/{kid}")
        assert model["id"] == kid and model["name"] == "python3"
        tab = Tab(second, kid)
        assert tab.run(CHECK) == WANT
        time.sleep(2.5)  # the parent poller looks every second
        assert tab.run("import os; print(os.getppid())") == [str(second.popen.pid)]
        # the server owns it: a restart gives a new empty kernel under the same id (asked
        # on a tab opened after it: see the crash in the test above)
        tab.close()
        second.api("POST", f"api/kernels/{kid}/restart")
        _wait("the new kernel", lambda: second.kernel_pid() not in (None, pid))
        tab = Tab(second, kid)
        assert tab.run("print('table' in globals())", timeout=90) == ["False"]
        tab.close()
    finally:
        second.stop()


def test_magics_save_and_restore_from_a_cell(server):
    """%load_ext pyckpt; %pyckpt save NAME in a cell: the server saves the kernel once the
    cell has run; %pyckpt restore NAME brings that state back in place of this kernel."""
    kid = server.api("POST", "api/kernels", {"name": "python3"})["id"]
    tab = Tab(server, kid)
    assert tab.run("%load_ext pyckpt\nsecret = [1, 2, 3]\n%pyckpt save point") == [
        "pyckpt: saving this kernel as point once this cell has run"]
    names = lambda: [i["name"] for i in server.api("GET", "api/pyckpt/images")]  # noqa: E731
    _wait("the image", lambda: "point" in names())
    pid = server.kernel_pid()
    out = tab.run("secret.append(4)\nprint(secret)")
    # the magic's thread prints the server's answer under whichever cell runs then
    assert [line for line in out if not line.startswith("pyckpt: saved this kernel to ")] == [
        "[1, 2, 3, 4]"], out
    out = tab.run("%pyckpt list")
    assert out[0].startswith(f"point: kernel {kid}, saved ") and out[0].endswith(", this kernel"), out
    assert tab.run("%pyckpt restore point") == ["pyckpt: replacing this kernel by the one saved as point"]
    time.sleep(1)
    _wait("the restored kernel", lambda: server.kernel_pid() == pid)
    tab.close()
    tab = Tab(server, kid)
    assert tab.run("print(secret)") == ["[1, 2, 3]"]
    # the same point again, as a new kernel beside this one
    out = tab.run("%pyckpt restore point --new-id")
    assert out == ["pyckpt: restoring point as a new kernel beside this one"], out
    new = _wait("the new kernel", lambda: [k["id"] for k in server.api("GET", "api/kernels")
                                           if k["id"] != kid])[0]
    copy = Tab(server, new)
    assert copy.run("secret.append('copy'); print(secret)") == ["[1, 2, 3, 'copy']"]
    assert tab.run("print(secret)") == ["[1, 2, 3]"]
    copy.close()
    tab.close()
