#!/usr/bin/env python3
"""Per-test cost of a prepared server: a fresh start, a pyckpt copy, a fork().

    python3 bench/harness.py [--repeat 10] [--start-seconds 2] [--json out.json]
                             [--alive 8] [--suite]

The server is examples/pytest_harness/server.py (it sleeps --start-seconds,
builds a 200 000-entry table, then listens).  "One test" is: get a server
in its pristine state, connect to it, ask GET (and check the answer says
counter 0), then end it.  Rows (median [best] of --repeat, milliseconds):

  fresh start   start the server, wait for its READY line, connect, GET, kill
                and reap (in this network namespace)
  pyckpt copy   Template.copy() of the image (dumped once) with
                new_pidns=True, new_netns=True, its stdout/stderr to a file of
                its own (fds=, as the pytest plugin does), connect inside its
                network namespace, GET, Template.kill() (SIGKILL of the
                namespace's init, reaped)
  fork()        the same server started with FORK_TEMPLATE=1 stops before
                listening and forks a child per request byte; the child
                unshares a network namespace, brings lo up and listens: from
                the request until its READY line, connect, GET, SIGKILL and
                wait until gone
  (copy split)  the copy row's Template.copy() call alone

Memory: --alive copies (and as many forked children) kept alive at once,
their summed Pss (/proc/PID/smaps_rollup, proportional: shared pages split
between the sharers) against one server's.

--suite also runs the example suite (examples/pytest_harness: 20 tests with
the pytest plugin) with pytest and reports its wall time.

Run as root.  Only processes this script starts (servers, the fork
template's children, copies and their namespace inits) are signalled, by
PID.  Files go to one temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyckpt

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "examples" / "pytest_harness" / "server.py"
PORT = 47310


def ask(sock: socket.socket, request: str) -> str:
    sock.sendall(request.encode() + b"\n")
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        answer += chunk
    return answer.decode().strip()


def check_pristine(sock: socket.socket) -> None:
    answer = ask(sock, "GET")
    if not answer.startswith("counter 0 entries 200000 "):
        raise RuntimeError(f"not pristine: {answer!r}")


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.0005)


def start_server(env: dict, log: Path, **kw) -> subprocess.Popen:
    out = open(log, "ab")
    try:
        return subprocess.Popen([sys.executable, str(SERVER), str(PORT)], env=env, stdin=kw.pop("stdin", subprocess.DEVNULL),
                                stdout=kw.pop("stdout", out), stderr=subprocess.STDOUT, start_new_session=True, **kw)
    finally:
        out.close()


def wait_line(log: Path, prefix: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(line.startswith(prefix) for line in log.read_text().splitlines()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {prefix} line in {log}: {log.read_text()[-500:]}")
        time.sleep(0.002)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return True
    return text[text.rindex(")") + 2] in "ZX"


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def summary(samples: list[float]) -> dict:
    return {"median_ms": statistics.median(samples) * 1e3, "best_ms": min(samples) * 1e3,
            "samples_ms": [s * 1e3 for s in samples]}


def bench_fresh(work: Path, env: dict, repeat: int) -> list[float]:
    samples = []
    for i in range(repeat):
        log = work / f"fresh-{i}.log"
        t0 = time.perf_counter()
        p = start_server(env, log)
        try:
            wait_line(log, "READY")
            with connect(PORT) as s:
                check_pristine(s)
        finally:
            p.kill()
            p.wait()
        samples.append(time.perf_counter() - t0)
    return samples


def make_image(work: Path, env: dict) -> Path:
    log = work / "original.log"
    p = start_server(env, log)
    try:
        wait_line(log, "READY")
        pyckpt.dump(p.pid, work / "img", kill=True, progress=False)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
    return work / "img"


def bench_copy(t, work: Path, repeat: int) -> tuple[list[float], list[float]]:
    total, calls = [], []
    for i in range(repeat):
        t0 = time.perf_counter()
        fd = os.open(work / f"copy-{i}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            p = t.copy(fds={1: fd, 2: fd})
        finally:
            os.close(fd)
        t1 = time.perf_counter()
        try:
            with pyckpt.network_namespace(p.pid):
                s = connect(PORT)
            with s:
                check_pristine(s)
        finally:
            t.kill(p)
        total.append(time.perf_counter() - t0)
        calls.append(t1 - t0)
    return total, calls


class ForkTemplate:
    def __init__(self, work: Path, env: dict):
        self.proc = start_server(dict(env, FORK_TEMPLATE="1"), work / "unused.log",
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.lines = self.proc.stdout
        if self.lines.readline().decode().strip() != "TEMPLATE":
            raise RuntimeError("the fork template did not start")

    def fork(self) -> int:
        self.proc.stdin.write(b"x")
        self.proc.stdin.flush()
        child, ready = None, False
        while child is None or not ready:
            line = self.lines.readline().decode()
            if not line:
                raise RuntimeError("the fork template ended")
            if line.startswith("CHILD "):
                child = int(line.split()[1])
            elif line.startswith("READY"):
                ready = True
        return child

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def end_forked(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)  # a child of the fork template this script started
    while not gone(pid):
        time.sleep(0.0005)


def bench_fork(ft: ForkTemplate, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        child = ft.fork()
        try:
            with pyckpt.network_namespace(child):
                s = connect(PORT)
            with s:
                check_pristine(s)
        finally:
            end_forked(child)
        samples.append(time.perf_counter() - t0)
    return samples


def memory(t, ft: ForkTemplate, work: Path, alive: int) -> dict:
    copies, forks = [], []
    try:
        for i in range(alive):
            copies.append(t.copy(fds={1: os.devnull, 2: os.devnull}))
            forks.append(ft.fork())
        time.sleep(0.2)
        return {"alive": alive, "template_pss_mib": pss_kib(ft.proc.pid) / 1024,
                "copies_pss_mib": sum(pss_kib(p.pid) for p in copies) / 1024,
                "forks_pss_mib": sum(pss_kib(c) for c in forks) / 1024}
    finally:
        for p in copies:
            t.kill(p)
        for c in forks:
            end_forked(c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--fresh-repeat", type=int, default=3, help="fresh starts (each takes --start-seconds)")
    ap.add_argument("--start-seconds", type=float, default=2.0)
    ap.add_argument("--alive", type=int, default=8)
    ap.add_argument("--suite", action="store_true", help="also time the example pytest suite")
    ap.add_argument("--json")
    args = ap.parse_args()
    env = dict(os.environ, START_SECONDS=str(args.start_seconds), PYTHONUNBUFFERED="1")
    work = Path(tempfile.mkdtemp(prefix="pyckpt-harness-"))
    results: dict = {"machine": platform.uname()._asdict(), "start_seconds": args.start_seconds}
    try:
        results["fresh"] = summary(bench_fresh(work, env, args.fresh_repeat))
        img = make_image(work, env)
        ft = ForkTemplate(work, env)
        try:
            with pyckpt.template(img, new_netns=True, progress=False) as t:
                bench_copy(t, work, 1)  # warm-up
                bench_fork(ft, 1)
                copy_total, copy_calls = bench_copy(t, work, args.repeat)
                fork = bench_fork(ft, args.repeat)
                results["copy"] = summary(copy_total)
                results["copy_call"] = summary(copy_calls)
                results["fork"] = summary(fork)
                results["memory"] = memory(t, ft, work, args.alive)
        finally:
            ft.close()
        if args.suite:
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                f"--basetemp={work / 'suite'}", str(SERVER.parent)],
                               cwd=work, capture_output=True, text=True)
            results["suite"] = {"tests": 20, "seconds": time.perf_counter() - t0,
                                "last_line": r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"per test (median [best] of {args.repeat}; fresh: of {args.fresh_repeat}), server start "
          f"{args.start_seconds} s:")
    for key, label in (("fresh", "fresh start"), ("copy", "pyckpt copy"), ("copy_call", "  Template.copy() alone"),
                       ("fork", "fork()")):
        r = results[key]
        print(f"  {label:24} {r['median_ms']:9.1f} ms [{r['best_ms']:.1f}]")
    print(f"  copy / fork: {results['copy']['median_ms'] / results['fork']['median_ms']:.1f}x")
    m = results["memory"]
    print(f"memory, {m['alive']} alive at once (Pss): copies {m['copies_pss_mib']:.1f} MiB, "
          f"forks {m['forks_pss_mib']:.1f} MiB (the fork template itself {m['template_pss_mib']:.1f} MiB)")
    if "suite" in results:
        s = results["suite"]
        print(f"example suite, 20 tests with the plugin: {s['seconds']:.1f} s ({s['last_line']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
