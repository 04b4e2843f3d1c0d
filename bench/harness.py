#!/usr/bin/env python3
"""Per-test cost of a prepared server: a fresh start, a pyckpt copy, a fork().

    python3 bench/harness.py [--repeat 10] [--start-seconds 2] [--json out.json]
                             [--alive 8] [--suite] [--sizes 64,1024] [--size-repeat 10]
                             [--idle 16] [--skip-server]

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
  fork()        (alternating with the copies) the same server started with FORK_TEMPLATE=1 stops before
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

--sizes 64,1024 (MiB; 0 for none): copy against fork() of one process of
that size (a small C program holding that much written memory), in
alternating runs:

  copy          Template.copy() of its image (no new netns), until the copy
                is released; its step times (Template.last_copy) beside
  fork()        one byte to the same program started in fork mode: it
                fork()s, the child writes "CHILD pid" to the shared pipe:
                from the byte until that line is read
  memory        --idle copies (and as many forked children) at once: summed
                Pss of the template and the copies (their inits share the
                template's memory), against the forked children and their
                parent

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
        # parent and child write to one pipe, print()'s text and newline in two writes:
        # "CHILD 123" and "READY ..." may come interleaved ("CHILD 123READY ...\n\n")
        import re

        seen = ""
        while not (re.search(r"CHILD (\d+)", seen) and "READY" in seen):
            line = self.lines.readline().decode()
            if not line:
                raise RuntimeError("the fork template ended")
            seen += line
        return int(re.search(r"CHILD (\d+)", seen).group(1))

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


SIZED_C = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    size_t n = (size_t)atol(argv[1]) << 20;
    unsigned char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < n; i += 4096)
        memset(m + i, (int)(i >> 12) * 7 + 1, 4096);
    signal(SIGCHLD, SIG_IGN);
    printf("READY\n");
    fflush(stdout);
    if (argc < 3)
        for (;;)
            pause();
    char c;
    while (read(0, &c, 1) == 1)
        if (fork() == 0) {
            char line[32];
            int k = snprintf(line, sizeof line, "CHILD %d\n", getpid());
            if (write(1, line, k) != k)
                _exit(1);
            for (;;)
                pause();
        }
    return 0;
}
"""


class SizedFork:
    """The sized program in fork mode: fork() returns the child's PID once it ran."""

    def __init__(self, exe: Path, mib: int):
        self.proc = subprocess.Popen([str(exe), str(mib), "fork"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     start_new_session=True)
        if self.proc.stdout.readline() != b"READY\n":
            raise RuntimeError("the sized fork program did not start")

    def fork(self) -> int:
        self.proc.stdin.write(b"x")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().decode()
        if not line.startswith("CHILD "):
            raise RuntimeError(f"the sized fork program said {line!r}")
        return int(line.split()[1])

    def close(self) -> None:
        self.proc.kill()  # started by this script; its children are killed by end_forked
        self.proc.wait()


def sized_image(work: Path, exe: Path, mib: int) -> Path:
    img = work / f"sized-{mib}"
    p = subprocess.Popen([str(exe), str(mib)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if p.stdout.readline() != b"READY\n":
            raise RuntimeError("the sized program did not start")
        pyckpt.dump(p.pid, img, kill=True, progress=False)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        p.stdout.close()
    return img


def bench_size(work: Path, exe: Path, mib: int, repeat: int, idle: int) -> dict:
    img = sized_image(work, exe, mib)
    std = {0: os.devnull, 1: os.devnull, 2: os.devnull}
    out: dict = {"mib": mib}
    sf = SizedFork(exe, mib)
    try:
        t0 = time.perf_counter()
        with pyckpt.template(img, fds=std, progress=False) as t:
            out["template_ms"] = (time.perf_counter() - t0) * 1e3
            out["fast"], out["reason"] = t.fast, t.reason
            copies, forks, phases = [], [], []
            for i in range(repeat + 1):  # alternating; the first of each is a warm-up
                t0 = time.perf_counter()
                p = t.copy()
                dt = time.perf_counter() - t0
                t.kill(p)
                if i:
                    copies.append(dt)
                    if t.last_copy is not None:
                        phases.append(t.last_copy.phases)
                t0 = time.perf_counter()
                child = sf.fork()
                dt = time.perf_counter() - t0
                end_forked(child)
                if i:
                    forks.append(dt)
            out["copy"], out["fork"] = summary(copies), summary(forks)
            out["copy_phases_ms"] = {k: statistics.median(ph.get(k, 0.0) for ph in phases) * 1e3
                                     for k in (phases[0] if phases else {})}
            alive_copies, alive_forks = [], []
            try:
                for _ in range(idle):
                    alive_copies.append(t.copy())
                    alive_forks.append(sf.fork())
                time.sleep(0.2)
                template_pss = pss_kib(t.pid) / 1024 if t.pid else 0.0
                copies_pss = sum(pss_kib(p.pid) for p in alive_copies) / 1024
                out["memory"] = {
                    "alive": idle, "template_pss_mib": template_pss, "copies_pss_mib": copies_pss,
                    "total_mib": template_pss + copies_pss,
                    "inits_pss_mib": sum(pss_kib(t.init_of(p)) for p in alive_copies) / 1024,
                    "fork_parent_pss_mib": pss_kib(sf.proc.pid) / 1024,
                    "forks_pss_mib": sum(pss_kib(c) for c in alive_forks) / 1024}
            finally:
                for p in alive_copies:
                    t.kill(p)
                for c in alive_forks:
                    end_forked(c)
    finally:
        sf.close()
        shutil.rmtree(img, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--fresh-repeat", type=int, default=3, help="fresh starts (each takes --start-seconds)")
    ap.add_argument("--start-seconds", type=float, default=2.0)
    ap.add_argument("--alive", type=int, default=8)
    ap.add_argument("--suite", action="store_true", help="also time the example pytest suite")
    ap.add_argument("--sizes", default="64,1024", help="MiB of the copy-vs-fork rows (0: none)")
    ap.add_argument("--size-repeat", type=int, default=10)
    ap.add_argument("--idle", type=int, default=16, help="copies (and forks) alive at once per size")
    ap.add_argument("--skip-server", action="store_true", help="only the --sizes rows")
    ap.add_argument("--json")
    args = ap.parse_args()
    env = dict(os.environ, START_SECONDS=str(args.start_seconds), PYTHONUNBUFFERED="1")
    work = Path(tempfile.mkdtemp(prefix="pyckpt-harness-"))
    results: dict = {"machine": platform.uname()._asdict(), "start_seconds": args.start_seconds,
                     "load_before": os.getloadavg()}
    try:
        sizes = [int(x) for x in args.sizes.split(",") if int(x) > 0]
        if sizes:
            exe = work / "sized"
            (work / "sized.c").write_text(SIZED_C)
            subprocess.run(["gcc", "-O2", "-o", str(exe), str(work / "sized.c")], check=True)
            results["sizes"] = [bench_size(work, exe, mib, args.size_repeat, args.idle) for mib in sizes]
        if not args.skip_server:
            server_rows(args, env, work, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    report(args, results)


def server_rows(args, env: dict, work: Path, results: dict) -> None:
    """The example server: fresh starts, then copies and forks in alternating runs."""
    results["fresh"] = summary(bench_fresh(work, env, args.fresh_repeat))
    img = make_image(work, env)
    ft = ForkTemplate(work, env)
    try:
        with pyckpt.template(img, new_netns=True, progress=False) as t:
            results["server_fast"], results["server_reason"] = t.fast, t.reason
            bench_copy(t, work, 1)  # warm-up
            bench_fork(ft, 1)
            copy_total, copy_calls, fork, phases = [], [], [], []
            for _ in range(args.repeat):
                total, calls = bench_copy(t, work, 1)
                copy_total += total
                copy_calls += calls
                if t.last_copy is not None:
                    phases.append(t.last_copy.phases)
                fork += bench_fork(ft, 1)
            results["copy"] = summary(copy_total)
            results["copy_call"] = summary(copy_calls)
            results["copy_phases_ms"] = {k: statistics.median(ph.get(k, 0.0) for ph in phases) * 1e3
                                         for k in (phases[0] if phases else {})}
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


def report(args, results: dict) -> None:
    print(f"load average {results['load_before'][0]:.2f} before, {results['load_after'][0]:.2f} after")
    for r in results.get("sizes", []):
        c, f = r["copy"], r["fork"]
        print(f"{r['mib']} MiB process ({'fast copies' if r['fast'] else 'full restores: ' + r['reason']}; "
              f"template made in {r['template_ms']:.0f} ms), median [best] of {args.size_repeat}:")
        print(f"  copy   {c['median_ms']:8.2f} ms [{c['best_ms']:.2f}]   "
              + " ".join(f"{k} {v:.2f}" for k, v in r["copy_phases_ms"].items()))
        print(f"  fork() {f['median_ms']:8.2f} ms [{f['best_ms']:.2f}]")
        print(f"  copy / fork: {c['median_ms'] / f['median_ms']:.1f}x")
        m = r["memory"]
        print(f"  {m['alive']} alive at once (Pss): template + copies {m['total_mib']:.1f} MiB "
              f"(template {m['template_pss_mib']:.1f}, copies {m['copies_pss_mib']:.1f}); "
              f"forks + their parent {m['forks_pss_mib'] + m['fork_parent_pss_mib']:.1f} MiB")
    if "fresh" not in results:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        return
    print(f"server, per test (median [best] of {args.repeat}; fresh: of {args.fresh_repeat}), server start "
          f"{args.start_seconds} s:")
    for key, label in (("fresh", "fresh start"), ("copy", "pyckpt copy"), ("copy_call", "  Template.copy() alone"),
                       ("fork", "fork()")):
        r = results[key]
        print(f"  {label:24} {r['median_ms']:9.1f} ms [{r['best_ms']:.1f}]")
    if results.get("copy_phases_ms"):
        print("  (copy steps, ms: " + " ".join(f"{k} {v:.2f}" for k, v in results["copy_phases_ms"].items()) + ")")
    print(f"  copy / fork: {results['copy']['median_ms'] / results['fork']['median_ms']:.1f}x"
          + ("" if results.get("server_fast") else f" (full restores: {results.get('server_reason')})"))
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
