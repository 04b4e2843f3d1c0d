#!/usr/bin/env python3
"""Start-up of the `pyckpt` command: a tiny process dumped and restored from the
command line, as whole commands, beside the floors of Python itself (and CRIU).

    python3 bench/startup.py [--repeat 11] [--size 4] [--criu PATH] [--json out.json]
                             [--pyckpt CMD] [--ref CMD] [--tmp DIR] [--profile]

Run as root, with gcc on the PATH (bench/target.c is compiled into the work
directory).  One round: start the target (`target SIZE`, a session of its own,
stdout appended to a log), time `pyckpt dump PID DIR` until it exits, SIGKILL
and reap the target, time `pyckpt restore DIR` until it exits (it prints the
PID once the process runs on its own), then check the restored copy answers:
SIGUSR1 makes it print the checksum of its memory, which must be the one it
printed when it started.  The copy is then SIGKILLed and reaped (this script is
a child subreaper: a restored process whose restoring command has exited is
its child).  With `--criu PATH` the same round runs with `criu dump -t PID -D
DIR --shell-job` (which kills the target once dumped: pyckpt's dump leaves it
running) and `criu restore -D DIR --shell-job -d` (restored detached).  With
`--ref CMD` another pyckpt command (an older checkout, say `env PYTHONPATH=OLD/src
python -m pyckpt`) runs the same round too: rows "ref dump", "ref restore".

Every command runs with a bytecode cache, as an installed command has one:
without PYTHONDONTWRITEBYTECODE, the cache under PYTHONPYCACHEPREFIX in the
work directory, filled by the first, untimed round (without `--no-warmup`).

Floors, each a whole process too: `python -c pass`, `python -S -c pass` (no
site: no .pth files, no site-packages), `python -I -c pass` (isolated: no
environment variables, no user site), `python -c "import pyckpt.cli"` (the
interpreter this script runs with).  Every
command is timed in every round, the order rotated from round to round, so the
floors and the commands see the same machine.  Cells: median [best] in
milliseconds, and the ratio of medians to the reference (the median of CRIU's
command when given, else `python -c pass`); beside the wall time, the CPU time
(user + system) of each command, which a busy machine disturbs less.  `--profile` runs one more dump and
restore, the same command with PYTHONPROFILEIMPORTTIME=1 (`python -X importtime`:
the console script as a user runs it, not `python -m pyckpt`), and prints how many
modules each loads, their total time, and the slowest.

Only processes this script starts (targets) or restores are signalled, by PID.
Everything goes into one temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PR_SET_CHILD_SUBREAPER = 36


def pyckpt_command(given: str | None) -> list[str]:
    """The `pyckpt` command: the one given, else the console script installed next
    to this interpreter, else `python -m pyckpt`."""
    if given:
        return given.split()
    script = Path(sys.executable).with_name("pyckpt")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pyckpt"]


class Bench:
    def __init__(self, args, work: Path):
        self.args = args
        self.work = work
        self.target = work / "target"
        subprocess.run(["gcc", "-O2", "-o", str(self.target), str(HERE / "target.c")], check=True)
        self.log = work / "target.log"
        self.pyckpt = pyckpt_command(args.pyckpt)
        # Every command runs with a bytecode cache, as an installed one has: not
        # PYTHONDONTWRITEBYTECODE, and the cache in the work directory (filled by the
        # first round).
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        self.samples: dict[str, list[float]] = {}  # wall seconds
        self.cpu: dict[str, list[float]] = {}  # CPU seconds (user + system)
        self.n = 0

    def timed(self, name: str, argv: list[str]) -> subprocess.CompletedProcess:
        """Run `argv` to its end: wall time (start to reaped), and CPU time (user + system,
        of it and the children it waited for: wait4's rusage), which a busy machine
        disturbs less."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    env=self.env)
            _, status, usage = os.wait4(proc.pid, 0)
            took = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            done = subprocess.CompletedProcess(argv, proc.returncode, out.read(), err.read())
        if done.returncode != 0:
            raise SystemExit(f"{name}: {' '.join(argv)} exited {done.returncode}: "
                             f"{done.stderr.decode(errors='replace').strip()}")
        self.samples.setdefault(name, []).append(took)
        self.cpu.setdefault(name, []).append(usage.ru_utime + usage.ru_stime)
        return done

    def start_target(self) -> tuple[int, str]:
        with open(self.log, "ab") as log:
            before = self.log.stat().st_size
            proc = subprocess.Popen([str(self.target), str(self.args.size)], stdout=log,
                                    stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        line = self.wait_line(before, "READY")
        return proc.pid, line.split("sum=")[1].split()[0]

    def wait_line(self, offset: int, prefix: str, pid: int | None = None) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[offset:].decode(errors="replace")
            for line in text.splitlines():
                if line.startswith(prefix) and (pid is None or f"nspid={pid}" in line):
                    return line
            time.sleep(0.002)
        raise SystemExit(f"no {prefix} line from the target in 10 s (log {self.log})")

    def check_copy(self, pid: int, want: str, who: str) -> None:
        """The restored copy answers SIGUSR1 with the checksum it started with."""
        offset = self.log.stat().st_size
        os.kill(pid, signal.SIGUSR1)
        line = self.wait_line(offset, "SUM", pid)
        if line.split()[1] != want:
            raise SystemExit(f"{who}: the restored process {pid} has sum {line.split()[1]}, not {want}")

    def end(self, pid: int) -> None:
        """SIGKILL and reap a process of ours (a target, or a restored copy whose
        restoring command has exited: our child, as we are a subreaper)."""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    def round_pyckpt(self, command: list[str] | None = None, name: str = "pyckpt") -> None:
        command = command or self.pyckpt
        img = self.work / "img"
        shutil.rmtree(img, ignore_errors=True)
        pid, want = self.start_target()
        try:
            self.timed(f"{name} dump", [*command, "dump", str(pid), str(img)])
        finally:
            self.end(pid)
        done = self.timed(f"{name} restore", [*command, "restore", str(img)])
        copy = int(done.stdout.split()[0])
        try:
            self.check_copy(copy, want, "pyckpt")
        finally:
            self.end(copy)

    def round_criu(self) -> None:
        img = self.work / "criu-img"
        shutil.rmtree(img, ignore_errors=True)
        img.mkdir()
        pid, want = self.start_target()
        try:
            self.timed("criu dump", [self.args.criu, "dump", "-t", str(pid), "-D", str(img),
                                     "--shell-job"])
        finally:
            self.end(pid)
        self.timed("criu restore", [self.args.criu, "restore", "-D", str(img), "--shell-job", "-d"])
        try:
            self.check_copy(pid, want, "criu")
        finally:
            self.end(pid)

    def floors(self) -> list[tuple[str, list[str]]]:
        py = sys.executable
        return [("python -c pass", [py, "-c", "pass"]),
                ("python -S -c pass", [py, "-S", "-c", "pass"]),
                ("python -I -c pass", [py, "-I", "-c", "pass"]),
                ("python -c 'import pyckpt.cli'", [py, "-c", "import pyckpt.cli"])]

    def run(self) -> None:
        steps = [(name, lambda argv=argv, name=name: self.timed(name, argv))
                 for name, argv in self.floors()]
        steps.append(("pyckpt", self.round_pyckpt))
        if self.args.ref:
            steps.append(("ref", lambda: self.round_pyckpt(self.args.ref.split(), "ref")))
        if self.args.criu:
            steps.append(("criu", self.round_criu))
        if not self.args.no_warmup:
            for _, step in steps:
                step()
            self.samples.clear()
            self.cpu.clear()
        for i in range(self.args.repeat):
            k = i % len(steps)
            order = steps[k:] + steps[:k]
            if i % 2:
                order.reverse()
            for _, step in order:
                step()

    def profile(self) -> dict[str, list[tuple[str, float, float]]]:
        """The imports of one dump and one restore: (module, self ms, cumulative ms).
        The command is the one timed (the console script, as a user runs it: pip's
        wrapper imports `re` first, then pyckpt.cli), with PYTHONPROFILEIMPORTTIME=1
        (= python -X importtime) in its environment."""
        out = {}
        img = self.work / "img"
        shutil.rmtree(img, ignore_errors=True)
        pid, want = self.start_target()
        env = {**self.env, "PYTHONPROFILEIMPORTTIME": "1"}
        try:
            d = subprocess.run([*self.pyckpt, "dump", str(pid), str(img)], capture_output=True,
                               env=env, stdin=subprocess.DEVNULL)
        finally:
            self.end(pid)
        r = subprocess.run([*self.pyckpt, "restore", str(img)], capture_output=True, env=env,
                           stdin=subprocess.DEVNULL)
        if d.returncode != 0 or r.returncode != 0:
            raise SystemExit(f"profile: {(d if d.returncode else r).stderr.decode(errors='replace')[-2000:]}")
        copy = int(r.stdout.split()[0])
        try:
            self.check_copy(copy, want, "pyckpt (profile)")
        finally:
            self.end(copy)
        for name, done in (("dump", d), ("restore", r)):
            rows = []
            for line in done.stderr.decode(errors="replace").splitlines():
                if line.startswith("import time:") and "|" in line:
                    own, cum, mod = (x.strip() for x in line[len("import time:"):].split("|"))
                    if cum.isdigit():
                        rows.append((mod, int(own) / 1000, int(cum) / 1000))
            out[name] = rows
        return out

def table(samples: dict[str, list[float]], cpu: dict[str, list[float]], reference: str) -> list[dict]:
    ref = statistics.median(samples[reference])
    ref_cpu = statistics.median(cpu[reference])
    rows = []
    for name, xs in samples.items():
        med, med_cpu = statistics.median(xs), statistics.median(cpu[name])
        rows.append({"command": name, "median_ms": med * 1e3, "best_ms": min(xs) * 1e3,
                     "cpu_median_ms": med_cpu * 1e3, "runs": len(xs), "ratio": med / ref,
                     "cpu_ratio": med_cpu / ref_cpu if ref_cpu else None})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=11, help="rounds (default 11)")
    ap.add_argument("--size", type=int, default=4, help="MiB of the target's memory (default 4)")
    ap.add_argument("--criu", metavar="PATH", help="a criu binary to compare with")
    ap.add_argument("--pyckpt", metavar="CMD",
                    help="the pyckpt command (default: the console script beside this python)")
    ap.add_argument("--ref", metavar="CMD",
                    help="another pyckpt command timed in the same rounds (rows 'ref ...')")
    ap.add_argument("--json", metavar="FILE", help="write every sample and the table as JSON")
    ap.add_argument("--tmp", default=None, help="where the work directory goes (default /tmp)")
    ap.add_argument("--no-warmup", action="store_true", help="no untimed first round")
    ap.add_argument("--profile", action="store_true",
                    help="also one dump and one restore under -X importtime: slowest imports")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (restore gives the process its PID back)")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    work = Path(tempfile.mkdtemp(prefix="pyckpt-startup-", dir=args.tmp))
    try:
        bench = Bench(args, work)
        bench.run()
        prof = bench.profile() if args.profile else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    reference = "criu restore" if args.criu else "python -c pass"
    rows = table(bench.samples, bench.cpu, reference)
    load = os.getloadavg()
    print(f"pyckpt command: {' '.join(bench.pyckpt)}; target {args.size} MiB; {args.repeat} rounds; "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (after); bytecode cached")
    print(f"wall: start to reaped; cpu: user + system time of the command; ratios of medians "
          f"to {reference}'s")
    print(f"{'command':<32} {'wall median':>11} {'best':>7} {'ratio':>7} {'cpu median':>11} {'ratio':>7}")
    for r in rows:
        cpu_ratio = f"{r['cpu_ratio']:>6.2f}x" if r["cpu_ratio"] is not None else f"{'-':>7}"
        print(f"{r['command']:<32} {r['median_ms']:>8.1f} ms {r['best_ms']:>7.1f} {r['ratio']:>6.2f}x "
              f"{r['cpu_median_ms']:>8.1f} ms {cpu_ratio}")
    if prof:
        for name, imports in prof.items():
            own = sum(x[1] for x in imports)
            mine = sum(x[1] for x in imports if x[0].startswith("pyckpt"))
            print(f"`pyckpt {name}` imports {len(imports)} modules: {own:.1f} ms in all (their own "
                  f"times), {mine:.1f} ms of it pyckpt's")
            top = sorted(imports, key=lambda x: -x[2])[:15]
            print(f"  slowest (cumulative ms): " + ", ".join(f"{m} {ms:.1f}" for m, _, ms in top))
            top = sorted(imports, key=lambda x: -x[1])[:15]
            print(f"  slowest (own ms): " + ", ".join(f"{m} {ms:.1f}" for m, ms, _ in top))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": bench.pyckpt, "size_mib": args.size, "repeat": args.repeat,
            "load": load, "machine": platform.platform(), "reference": reference,
            "python": sys.version, "samples_s": bench.samples, "cpu_s": bench.cpu, "rows": rows,
            "imports_ms": prof,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
