"""Small processes through the Python API: dump and restore time (issue 14, item 2).

    python3 bench/small.py [--repeat 21] [--json out.json] [--profile dump|restore]
                           [--only python,c] [--tmp DIR]

Run as root, with gcc on the PATH (bench/target.c is compiled into the work
directory).  Two targets, each started by the script in a session of its own:

- "python 10 MB": `python3 -c ...` (this interpreter) holding a 1 MiB bytes
  object; SIGUSR1 makes it print `SUM <xxh of its data> <counter>`: its resident
  size is ~10 MB.
- "C 4 MiB": bench/target.c with 4 MiB of written memory (SIGUSR1: `SUM S ...`).

Rows (`median [best]` of --repeat runs, imports excluded: everything is imported
before the first run, and one untimed warm-up of each comes first):

| row | what |
| --- | --- |
| dump | `pyckpt.dump(pid, dir)` without kill, into a directory removed just before |
| pyckpt CPU | the CPU time (user + system) pyckpt's own process spent in the call, median: less moved by other load on the machine than the wall time |
| restore | `pyckpt.restore(dir)` of an image dumped with kill=True, until it returns; the copy is then checked (SIGUSR1, its answer compared with the original's) and killed and reaped, by PID |
| floor: spawn | fork + exec of the same binary until it has run (`python3 -S -c pass`, `target` with no argument: both exit at once), and waitpid |
| floor: injected calls | the operation's count of injected syscalls × the cost of one injected getpid() measured in the same run (pinned to the target's CPU, as dump and restore are) |
| task CPU | restore: the CPU time the restored task itself spent until restore() returned (/proc/PID/schedstat, read at once): its exec of pyckpt's stub, mapping, reading the pages pyckpt did not copy in — part of the wall time that is not pyckpt's |

pyckpt's own resident size is printed too: where the stub cannot be used the
restored task starts as a copy of pyckpt (clone3), and pyckpt's memory is then
what CREATE copies and CLEAR unmaps.

Beside each: the injected calls per operation (DumpStats / RestoreStats
.injected_calls) and the files pyckpt opens under /proc per operation (counted
with an audit hook on `open`: Python's open() and os.open(); the C helper's
own opens are not seen).  Dump, restore and the floors alternate (the order
flips every round).  The VM's load is printed (`uptime`); the script signals
only processes it started or restored, by PID, and removes its work directory.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import pyckpt  # noqa: E402
from pyckpt import ptrace_ops as pt  # noqa: E402
from pyckpt import restorer  # noqa: E402
from pyckpt.restorer import RestoreStats  # noqa: E402

_real_restore = restorer.restore
STATS: list[RestoreStats] = []


def _restore_with_stats(*a, **kw):
    """pyckpt.restore() takes no stats=: its restorer.restore is given one here."""
    return _real_restore(*a, stats=STATS[-1] if STATS else None, **kw)


restorer.restore = _restore_with_stats

PY_TARGET = r"""
import os, signal, sys, hashlib
data = bytes(range(256)) * 4096  # 1 MiB
n = 0
def on_usr1(signo, frame):
    global n
    n += 1
    os.write(1, b"SUM %s %d\n" % (hashlib.sha1(data).hexdigest().encode(), n))
signal.signal(signal.SIGUSR1, on_usr1)
os.write(1, b"READY\n")
while True:
    signal.pause()
"""

OPENS = {"on": False, "proc": 0}


def _audit(event, args):
    if OPENS["on"] and event == "open":
        path = args[0]
        if isinstance(path, (str, bytes)) and str(path).startswith("/proc"):
            OPENS["proc"] += 1


sys.addaudithook(_audit)


class Target:
    def __init__(self, argv: list[str], log: Path):
        self.argv, self.log = argv, log
        with open(log, "ab") as out:  # O_APPEND: every restored copy appends its answers
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        self.pid = self.popen.pid
        self.wait_for("READY")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, word: str, count: int = 1, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.text().splitlines() if line.startswith(word)]
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                raise RuntimeError(f"target {self.pid}: no {word!r} line in {self.log}")
            time.sleep(0.002)

    def checksum(self, pid: int | None = None) -> str:
        """Ask it (or its restored copy `pid`) for its SUM line; returns the checksum part."""
        have = len([line for line in self.text().splitlines() if line.startswith("SUM")])
        os.kill(pid or self.pid, signal.SIGUSR1)
        return self.wait_for("SUM", have + 1)[-1].split()[1]


def kill_own(pid: int) -> None:
    """SIGKILL and reap a process this script started or restored (its child)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


CPU: list[float] = []  # pyckpt's own CPU time (user + system) of each counted() call


def counted(fn):
    OPENS["proc"] = 0
    OPENS["on"] = True
    try:
        c = time.process_time()
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        CPU.append(time.process_time() - c)
        return dt, out, OPENS["proc"]
    finally:
        OPENS["on"] = False


def inject_cost(pid: int, calls: int = 400) -> float:
    """Seconds per injected getpid() in stopped process `pid`, pinned to its CPU."""
    from pyckpt import proc
    from pyckpt.inject import Injector, injection_site_from, nr
    from pyckpt.seize import Seized, pinned_to_cpu

    with pinned_to_cpu(proc.read_stat(pid).processor), Seized(pid):
        vdso = next(m for m in proc.read_maps(pid) if m.path == "[vdso]")
        site = injection_site_from(pid, vdso.start, vdso.size)
        with Injector(pid, site) as inj:
            inj.call(nr.getpid)
            t = time.perf_counter()
            for _ in range(calls):
                inj.call(nr.getpid)
            return (time.perf_counter() - t) / calls


def spawn_floor(argv: list[str]) -> float:
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p.wait()
    return time.perf_counter() - t


def task_cpu(pid: int) -> float:
    """Seconds of CPU task `pid` has run so far (/proc/PID/schedstat, its first field)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def own_rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def summary(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "best": min(xs), "n": len(xs)}


def bench_target(name: str, argv: list[str], floor_argv: list[str], work: Path, reps: int,
                 profile: str | None) -> dict:
    t = Target(argv, work / f"{name}.log")
    want = t.checksum()
    dumps, dump_calls, dump_opens, dump_phases, dump_cpu, restore_cpu = [], [], [], [], [], []
    restores, restore_calls, restore_opens, phases, task_cpus = [], [], [], [], []
    floors, per_call = [], []
    img = work / f"{name}-img"
    live_img = work / f"{name}-live"
    prof = cProfile.Profile() if profile else None
    try:
        # warm-up, untimed
        pyckpt.dump(t.pid, live_img, progress=False)
        shutil.rmtree(live_img)
        for r in range(reps + 1):
            def one_dump():
                shutil.rmtree(live_img, ignore_errors=True)
                if prof and profile == "dump" and r:
                    prof.enable()
                try:
                    return counted(lambda: pyckpt.dump(t.pid, live_img, progress=False))
                finally:
                    if prof:
                        prof.disable()

            def one_floor():
                floors.append(spawn_floor(floor_argv)) if r else spawn_floor(floor_argv)
                per_call.append(inject_cost(t.pid))

            for step in ((one_dump, one_floor) if r % 2 else (one_floor, one_dump)):
                out = step()
                if step is one_dump and r:
                    dt, image, opens = out
                    dumps.append(dt)
                    dump_cpu.append(CPU[-1])
                    dump_calls.append(image.dump_stats.injected_calls)
                    dump_opens.append(opens)
                    dump_phases.append(dict(image.dump_stats.phases, freeze=image.dump_stats.freeze))
        assert t.checksum() == want, f"{name}: the dumped target's state changed"
        # restore: one image dumped with kill, restored again and again
        pyckpt.dump(t.pid, img, kill=True, progress=False)
        t.popen.wait()
        for r in range(reps + 1):
            stats = RestoreStats()
            STATS.append(stats)
            if prof and profile == "restore" and r:
                prof.enable()
            try:
                dt, p, opens = counted(lambda: pyckpt.restore(img, allow_changed_files=True,
                                                              progress=False))
            finally:
                if prof:
                    prof.disable()
            child_cpu = task_cpu(p.pid)  # before it runs on its own (the checksum)
            try:
                got = t.checksum(p.pid)
                assert got == want, f"{name}: restored copy {p.pid} answered {got}, not {want}"
            finally:
                kill_own(p.pid)
            if r:
                restores.append(dt)
                restore_cpu.append(CPU[-1])
                task_cpus.append(child_cpu)
                restore_calls.append(stats.injected_calls)
                restore_opens.append(opens)
                phases.append(stats.phases)
    finally:
        kill_own(t.pid)
    if prof:
        st = pstats.Stats(prof)
        st.sort_stats("cumulative").print_stats(45)
        st.sort_stats("tottime").print_stats(30)
    call = statistics.median(per_call)
    stage_med = {k: statistics.median(ph.get(k, 0) for ph in phases) for k in phases[0]}
    dump_med = {k: statistics.median(ph.get(k, 0) for ph in dump_phases) for k in dump_phases[0]}
    return {
        "target": name,
        "dump": summary(dumps), "dump_calls": statistics.median(dump_calls),
        "dump_proc_opens": statistics.median(dump_opens),
        "restore": summary(restores), "restore_calls": statistics.median(restore_calls),
        "restore_proc_opens": statistics.median(restore_opens),
        "restore_stages": stage_med, "dump_phases": dump_med,
        "spawn_floor": summary(floors), "inject_call": call,
        "dump_cpu": summary(dump_cpu), "restore_cpu": summary(restore_cpu),
        "restore_task_cpu": summary(task_cpus), "pyckpt_rss_kib": own_rss_kib(),
    }


def fmt(results: list[dict]) -> str:
    def ms(s):
        return f"{s['median'] * 1e3:.1f} [{s['best'] * 1e3:.1f}] ms"

    out = ["| target | dump | restore | pyckpt CPU dump / restore | restored task's CPU "
           "| injected stops dump / restore "
           "| /proc opens dump / restore | floor: spawn | floor: injected calls dump / restore (µs per call) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["inject_call"]
        out.append(f"| {r['target']} | {ms(r['dump'])} | {ms(r['restore'])} | "
                   f"{r['dump_cpu']['median'] * 1e3:.1f} / {r['restore_cpu']['median'] * 1e3:.1f} ms | "
                   f"{r['restore_task_cpu']['median'] * 1e3:.1f} ms | "
                   f"{r['dump_calls']:.0f} / "
                   f"{r['restore_calls']:.0f} | {r['dump_proc_opens']:.0f} / {r['restore_proc_opens']:.0f} | "
                   f"{ms(r['spawn_floor'])} | {r['dump_calls'] * c * 1e3:.1f} / "
                   f"{r['restore_calls'] * c * 1e3:.1f} ms ({c * 1e6:.1f}) |")
    for r in results:
        st = ", ".join(f"{k} {v * 1e3:.2f}" for k, v in r["restore_stages"].items() if v >= 0.0002)
        out.append(f"\n{r['target']} restore stages (median ms): {st}")
        ph = ", ".join(f"{k} {v * 1e3:.2f}" for k, v in r["dump_phases"].items() if v >= 0.0002)
        out.append(f"{r['target']} dump phases (median ms): {ph}")
    if results:
        out.append(f"\npyckpt's resident size: {results[-1]['pyckpt_rss_kib'] / 1024:.1f} MiB")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--json")
    ap.add_argument("--profile", choices=("dump", "restore"))
    ap.add_argument("--only", default="python,c")
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("small.py: run as root (restore needs clone3 set_tid)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="pyckpt-small-", dir=a.tmp))
    try:
        exe = work / "target"
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "target.c")], check=True)
        cases = {
            "python 10 MB": ([sys.executable, "-c", PY_TARGET], [sys.executable, "-S", "-c", "pass"]),
            "C 4 MiB": ([str(exe), "4"], [str(exe)]),
        }
        wanted = a.only.split(",")
        results = []
        for name, (argv_, floor) in cases.items():
            if name.split()[0].lower() in wanted:
                results.append(bench_target(name, argv_, floor, work, a.repeat, a.profile))
        print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
        print(fmt(results))
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
