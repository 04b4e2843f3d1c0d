"""Save a notebook kernel with its tab open, bring it back under the same id, save
what changed since, and bring that back as a second kernel beside the first.

    pip install 'pyckpt[jupyter]' websocket-client     # (scripts/setup.sh has them)
    python3 examples/jupyter_kernel.py                  # as root

Starts `jupyter server` (the pyckpt.jupyter extension is enabled by pyckpt's
install), creates a kernel over REST and opens a websocket on it as a
notebook tab does, runs a cell that builds some state, then, with the tab
still open:

    pyckpt jupyter save KERNEL_ID DIR --stop   # saved, and ended
    pyckpt jupyter restore DIR                 # same kernel id, ports and key

and runs the next cell on the same tab: the variables are there and the
execution count carries on.  Then, after a cell that changes one variable:

    pyckpt jupyter save KERNEL_ID DIR2 --parent DIR   # only what changed since DIR
    pyckpt jupyter restore DIR2 --new-id              # a new kernel, free ports

and a tab on the new kernel sees the state of that save, while the first kernel
runs on with its own.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

try:
    import websocket  # websocket-client
    import jupyter_server  # noqa: F401
except ImportError:
    sys.exit("this example needs jupyter_server and websocket-client: "
             "pip install 'pyckpt[jupyter]' websocket-client")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cell(ws, session: str, code: str, timeout: float = 60) -> list[str]:
    """Run `code` on the tab's websocket; its printed lines.  A request sent while
    ZMQ reconnects may be lost, as across any kernel restart: sent again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({"header": {"msg_id": msg_id, "username": "example", "session": session,
                                       "msg_type": "execute_request", "version": "5.3", "date": ""},
                            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                            "content": {"code": code, "silent": False, "store_history": True,
                                        "user_expressions": {}, "allow_stdin": False}}))
        out, replied, idle = [], False, False
        again = time.monotonic() + 5
        while time.monotonic() < again or (replied and not idle):
            try:
                msg = json.loads(ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            replied |= msg["msg_type"] == "execute_reply"
            idle |= msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
            if replied and idle:
                return "".join(out).splitlines()
    raise SystemExit(f"no answer to {code!r} within {timeout:.0f} s")


def main(workdir: str) -> bool:
    token, port = secrets.token_hex(16), free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=os.path.join(workdir, "runtime"),
               IPYTHONDIR=os.path.join(workdir, "ipython"))
    log = open(os.path.join(workdir, "server.log"), "wb")
    server = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={workdir}"],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True, env=env)

    def api(method, path, body=None):
        req = urllib.request.Request(url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Authorization", f"token {token}")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"null")

    def pyckpt_jupyter(*args):
        r = subprocess.run([sys.executable, "-m", "pyckpt", "jupyter", *args, "--server", url,
                            "--token", token], capture_output=True, text=True, env=env)
        if r.returncode:
            raise SystemExit(f"pyckpt jupyter {args[0]} failed: {r.stderr.strip()}")
        return r.stdout.strip()

    try:
        for _ in range(300):
            try:
                api("GET", "api/pyckpt")
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit("the server did not start; see server.log") from None
                time.sleep(0.2)
        kernel_id = api("POST", "api/kernels", {"name": "python3"})["id"]
        session = uuid.uuid4().hex
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?session_id={session}",
            header=[f"Authorization: token {token}"], timeout=60)
        ws.settimeout(1)
        out = run_cell(ws, session, "table = {i: i * i for i in range(100_000)}\nanswer = 41 + 1\n"
                                    "def twice(x):\n    return 2 * x\n"
                                    "print(get_ipython().execution_count)")
        print(f"1. kernel {kernel_id} ran a cell on its tab: a table of 100000 squares, "
              f"answer = 42, a function; execution count {out[-1]}")

        image = os.path.join(workdir, "saved")
        t = time.perf_counter()
        print("2. " + pyckpt_jupyter("save", kernel_id, image, "--stop")
              + f" ({time.perf_counter() - t:.2f} s)")
        t = time.perf_counter()
        print("3. " + pyckpt_jupyter("restore", image) + f" ({time.perf_counter() - t:.2f} s)")

        out = run_cell(ws, session, "print(answer, len(table), table[99_999], twice(21))\n"
                                    "print(get_ipython().execution_count)")
        print(f"4. the same tab runs a cell: {' | '.join(out)}")
        ok = out[:1] == [f"42 100000 {99_999 ** 2} 42"] and len(out) == 2 and int(out[1]) > 1

        run_cell(ws, session, "answer = 'changed'")
        later = os.path.join(workdir, "later")
        print("5. " + pyckpt_jupyter("save", kernel_id, later, "--parent", image))
        said = pyckpt_jupyter("restore", later, "--new-id")
        print("6. " + said)
        copy_id = said.split(" as a new kernel ")[1].split()[0]
        copy_session = uuid.uuid4().hex
        copy = websocket.create_connection(
            f"ws://127.0.0.1:{port}/api/kernels/{copy_id}/channels?session_id={copy_session}",
            header=[f"Authorization: token {token}"], timeout=60)
        copy.settimeout(1)
        run_cell(ws, session, "answer = 'first kernel'")
        mine = run_cell(copy, copy_session, "print(answer, len(table))")
        first = run_cell(ws, session, "print(answer, len(table))")
        print(f"7. the new kernel's tab: {' | '.join(mine)}; the first kernel's: {' | '.join(first)}")
        copy.close()
        ws.close()
        ok = ok and mine == ["changed 100000"] and first == ["first kernel 100000"]
        print("kernel example " + ("succeeded: the kernel came back with its variables under "
                                   "its id" if ok else "FAILED"))
        return ok
    finally:
        try:
            for k in api("GET", "api/kernels"):
                api("DELETE", f"api/kernels/{k['id']}")
        except OSError:
            pass
        server.kill()
        server.wait()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="pyckpt-kernel-") as d:
        sys.exit(0 if main(d) else 1)
