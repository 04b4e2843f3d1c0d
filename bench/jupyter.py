#!/usr/bin/env python3
"""Saving a notebook kernel that holds a lot of memory: freeze, restore, first cell.

    python3 bench/jupyter.py [--size-mib 1024] [--repeat 5] [--lazy] [--state auto|pandas|numpy|bytearray]
                             [--json out.json] [--tmp DIR]

Run as root from the project's virtual environment (`.venv/bin/python
bench/jupyter.py`: it needs jupyter_server, ipykernel and websocket-client,
the test extra, and the pyckpt.jupyter extension that scripts/setup.sh enables
in .venv).  It starts its own `jupyter server` on 127.0.0.1 (a free port, a
random token, its own runtime/config/data directories under the work
directory), creates a kernel through REST and opens one websocket on it, as a
notebook tab does.  A cell then builds the state: a pandas DataFrame of
--size-mib MiB of float64 when the kernel has pandas, else a numpy array,
else a bytearray of random bytes (what was used is in the output; --state
asks for one of them).

Then, --repeat times, in this order (one round, untimed, comes first):

  cell           a cell that rewrites 1 % of the state (one contiguous piece),
                 timed on the tab from the request until the kernel is idle:
                 the reference latency of an ordinary cell
  copy in kernel the time the kernel takes to copy its state (`bytes(view)`),
                 timed inside the kernel: the reference for what moving that
                 much memory costs here
  save           `POST /api/pyckpt/kernels/ID/save` (pre-copy on, the kernel
                 runs on): the freeze (`dump_stats.freeze`: the kernel stopped),
                 the dump's total, the request's wall time, the dump's phases
  incremental    after another cell rewriting 1 % of the state, a save with
                 "parent": the image above (only the pages that changed
                 are stored): its freeze, and its size / the full image's
  save --stop    the same as save with "stop": the kernel ends once saved
  restore        `POST /api/pyckpt/restore` of that image under the same id:
                 the request's wall time and pyckpt.restore's own time in it
  first cell     right after the restore returns: a cell on the tab that was
                 open all along (its ZMQ connections come back as they were,
                 --tcp-established), timed from the request until idle; a
                 request lost while ZMQ reconnects is sent again after 5 s,
                 which then shows in this figure
  lazy (--lazy)  another save --stop, restored with "lazy": true (memory read
                 from the image on first touch): the request, its first cell,
                 then a cell reading a byte of every page of the state

Every image directory is deleted right after its use.  The table gives
median [min, max] of each; ratios are taken against the references measured
in the same round (freeze / copy in kernel, first cell / cell).  The load
(`/proc/loadavg`) is printed before and after: on a shared machine the figures
are noisy, compare the ratios.

Only the server this script started is signalled (its kernels are ended
through REST first, then the server by PID, then what it left, each by PID).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Server:
    def __init__(self, work: str):
        self.token = secrets.token_hex(16)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = dict(os.environ, JUPYTER_RUNTIME_DIR=f"{work}/runtime",
                        JUPYTER_CONFIG_DIR=f"{work}/config", JUPYTER_DATA_DIR=f"{work}/data",
                        IPYTHONDIR=f"{work}/ipython")
        os.makedirs(f"{work}/root")
        self.log = f"{work}/server.log"
        with open(self.log, "wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                 "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                 "--ServerApp.port_retries=0", f"--ServerApp.token={self.token}",
                 f"--ServerApp.root_dir={work}/root"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=self.env)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.api("GET", "api/pyckpt")
                return
            except Exception:
                if self.popen.poll() is not None or time.monotonic() > deadline:
                    with open(self.log) as f:
                        raise SystemExit("bench/jupyter.py: the server did not start with the pyckpt "
                                         "extension:\n" + f.read()[-3000:]) from None
                time.sleep(0.2)

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 600):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise SystemExit(f"bench/jupyter.py: {method} {path}: HTTP {e.code}: "
                             f"{e.read().decode(errors='replace')}") from None

    def stop(self) -> None:
        import psutil

        try:
            for k in self.api("GET", "api/kernels", timeout=30):
                self.api("DELETE", f"api/kernels/{k['id']}", timeout=30)
        except BaseException:
            pass
        try:
            left = [c.pid for c in psutil.Process(self.popen.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            left = []
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        for pid in left:  # what it left (now children of init or a subreaper), by PID
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Tab:
    """A notebook tab: one websocket on the kernel's channels."""

    def __init__(self, server: Server, kernel_id: str):
        import websocket

        self.websocket = websocket
        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels?session_id={self.session}",
            header=[f"Authorization: token {server.token}"], timeout=120)
        self.ws.settimeout(0.05)

    def run(self, code: str, timeout: float = 600,
            retry_every: float | None = None) -> tuple[list[str], float]:
        """Run a cell: (its printed lines, seconds from the first request until idle).  With
        `retry_every`, the request is sent again after that many seconds without an answer
        (a request sent while ZMQ reconnects to a restored kernel may be lost)."""
        start = time.perf_counter()
        deadline = time.monotonic() + timeout
        while True:
            msg_id = uuid.uuid4().hex
            self.ws.send(json.dumps({
                "header": {"msg_id": msg_id, "username": "bench", "session": self.session,
                           "msg_type": "execute_request", "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
            out, status, idle = [], None, False
            again = time.monotonic() + (retry_every or timeout)
            while time.monotonic() < min(again, deadline) or (status and not idle):
                try:
                    msg = json.loads(self.ws.recv())
                except self.websocket.WebSocketTimeoutException:
                    continue
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    raise SystemExit(f"bench/jupyter.py: the cell {code[:60]!r} failed: "
                                     f"{content['ename']}: {content['evalue']}")
                elif kind == "execute_reply":
                    status = content["status"]
                elif kind == "status" and content["execution_state"] == "idle":
                    idle = True
                if status and idle:
                    return "".join(out).splitlines(), time.perf_counter() - start
            if time.monotonic() > deadline:
                raise SystemExit(f"bench/jupyter.py: no answer to {code[:60]!r} within {timeout} s")


BUILD = """
import os, time
n, want = {size}, {state!r}
try:
    if want == "bytearray":
        raise ImportError
    import numpy as np
    try:
        if want == "numpy":
            raise ImportError
        import pandas as pd
        # the frame is a view of `data` (copy=False): pandas >= 3 hands out its values
        # read-only (copy-on-write), the cells rewrite them through `data`
        data = np.random.default_rng(0).random((n // 8 // 16, 16))
        state = pd.DataFrame(data, copy=False)
        assert np.shares_memory(state.values, data)
        kind = "pandas DataFrame"
        view = memoryview(data).cast("B")
    except ImportError:
        if want == "pandas":
            raise
        state = np.random.default_rng(0).random(n // 8)
        kind = "numpy array"
        view = memoryview(state).cast("B")
except ImportError:
    if want not in ("auto", "bytearray"):
        raise
    state = bytearray(n)
    for i in range(0, n, 1 << 24):
        state[i:i + (1 << 24)] = os.urandom(min(1 << 24, n - i))
    kind = "bytearray"
    view = memoryview(state)
print(kind, view.nbytes)
"""
# rewrite 1 % of the state, one contiguous piece at a different place each time
TOUCH = ("p = view.nbytes // 100; o = ({i} * 37 % 99) * p; view[o:o + p] = os.urandom(p)")
READ_ALL = "sum(view[::4096])"  # a byte of every page
COPY = "t = time.perf_counter(); _ = bytes(view); print(time.perf_counter() - t); del _"


def _stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "samples": xs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="the kernel's state (MiB)")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds (>= 5 for a median)")
    ap.add_argument("--json", metavar="FILE", help="write every sample there too")
    ap.add_argument("--lazy", action="store_true", help="also restore lazily (\"lazy\": true) "
                                                       "each round: its first cell, and a cell "
                                                       "reading a byte of every page")
    ap.add_argument("--state", choices=("auto", "pandas", "numpy", "bytearray"), default="auto",
                    help="what holds the state: auto (the first of pandas, numpy, bytearray the "
                         "kernel can import; default) or that one")
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="where the work directory goes")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/jupyter.py: run as root (the server's extension seizes the kernel)")
    need = 2 * (args.size_mib << 20) + (512 << 20)
    if shutil.disk_usage(args.tmp).free < need:
        raise SystemExit(f"bench/jupyter.py: {args.tmp} has less than {need >> 20} MiB free")
    work = tempfile.mkdtemp(prefix="pyckpt-bench-jupyter-", dir=args.tmp)
    load_before = _load()
    server = None
    rows: dict[str, list[float]] = {}
    phases: dict[str, list[float]] = {}
    try:
        server = Server(work)
        kid = server.api("POST", "api/kernels", {"name": "python3"})["id"]
        tab = Tab(server, kid)
        (kind,), _ = tab.run(BUILD.format(size=args.size_mib << 20, state=args.state))
        print(f"kernel {kid}: {kind}; load {load_before}", file=sys.stderr, flush=True)
        for i in range(args.repeat + 1):
            timed = i > 0
            sample = {}
            _, sample["cell"] = tab.run(TOUCH.format(i=2 * i))
            (copy,), _ = tab.run(COPY)
            sample["copy in kernel"] = float(copy)
            img = f"{work}/img"
            r = server.api("POST", f"api/pyckpt/kernels/{kid}/save", {"path": img})
            sample["save: freeze"], sample["save: dump total"], sample["save: request"] = (
                r["freeze"], r["total"], r["took"])
            image_mib = r["size"] / 2**20
            for name, v in r.get("phases", {}).items():
                phases.setdefault(name, []).append(v) if timed else None
            tab.run(TOUCH.format(i=2 * i + 1))
            r = server.api("POST", f"api/pyckpt/kernels/{kid}/save", {"path": img + "-inc",
                                                                     "parent": img})
            sample["incremental save: freeze"] = r["freeze"]
            sample["incremental size / full"] = r["size"] / (image_mib * 2**20)
            shutil.rmtree(img + "-inc")
            shutil.rmtree(img)
            r = server.api("POST", f"api/pyckpt/kernels/{kid}/save", {"path": img, "stop": True})
            sample["save --stop: freeze"] = r["freeze"]
            t = time.perf_counter()
            r = server.api("POST", "api/pyckpt/restore", {"path": img})
            sample["restore: request"] = time.perf_counter() - t
            sample["restore: pyckpt.restore"] = r["restore_seconds"]
            _, sample["first cell"] = tab.run("pass", retry_every=5)
            shutil.rmtree(img)
            if args.lazy:
                server.api("POST", f"api/pyckpt/kernels/{kid}/save", {"path": img, "stop": True})
                t = time.perf_counter()
                r = server.api("POST", "api/pyckpt/restore", {"path": img, "lazy": True})
                sample["lazy restore: request"] = time.perf_counter() - t
                sample["lazy restore: pyckpt.restore"] = r["restore_seconds"]
                _, sample["lazy: first cell"] = tab.run("pass", retry_every=5)
                _, sample["lazy: cell reading it all"] = tab.run(READ_ALL)
                shutil.rmtree(img)
            sample["freeze / copy in kernel"] = sample["save: freeze"] / sample["copy in kernel"]
            sample["restore / copy in kernel"] = sample["restore: pyckpt.restore"] / sample["copy in kernel"]
            sample["first cell / cell"] = sample["first cell"] / sample["cell"]
            if timed:
                for k, v in sample.items():
                    rows.setdefault(k, []).append(v)
            print(f"round {i}{'' if timed else ' (untimed)'}: " +
                  ", ".join(f"{k} {v:.3f}" for k, v in sample.items()), file=sys.stderr, flush=True)
        tab.ws.close()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = _load()
    result = {"size_mib": args.size_mib, "state": kind, "image_mib": round(image_mib, 1),
              "repeat": args.repeat, "load_before": load_before, "load_after": load_after,
              "cpus": os.cpu_count(), "rows": {k: _stats(v) for k, v in rows.items()},
              "freeze_phases": {k: _stats(v) for k, v in phases.items()}}
    print(f"\nkernel holding {args.size_mib} MiB ({kind}), image {image_mib:.0f} MiB, "
          f"{args.repeat} rounds; load {load_before} before, {load_after} after, "
          f"{os.cpu_count()} CPUs")
    print(f"{'':28} {'median':>9} {'min':>9} {'max':>9}")
    for k, s in result["rows"].items():
        unit = "" if "/" in k else " s"
        print(f"{k:28} {s['median']:9.3f} {s['min']:9.3f} {s['max']:9.3f}{unit}")
    print("dump phases of the running save (median s): " +
          ", ".join(f"{k} {s['median']:.3f}" for k, s in result["freeze_phases"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
