#!/usr/bin/env python3
"""pyckpt dump/restore benchmark against simple floors, fork(), injection and (--criu) CRIU.

    python3 bench/bench.py [--sizes 64,1024] [--repeat 3] [--json out.json]
                           [--criu PATH [--criu-sizes 4,64,1024]]

For each size N (MiB) a target (bench/target.c, compiled here) maps N MiB of
private anonymous memory, dirties every page and sleeps.  In the same run,
R times each (min and median reported):

  dump           pyckpt.dump(pid, dir) without kill; stored bytes / wall time;
                 freeze time and phases from image.dump_stats
  dump floor     lib.ck_vm_read_to_file over the target's memory into a fresh
                 file beside the image (process_vm_readv + write, reused buffer),
                 its disk blocks allocated first (fallocate, as a dump's copy does)
  restore        target killed and reaped, then pyckpt.restorer.restore(dir)
                 until it returns (the process runs); page bytes / wall time;
                 stage timings from RestoreStats; the restored copy is checked
                 (checksum of its memory) and then killed and reaped
  lazy restore   restore(lazy=True) until it returns (the process runs, its
                 pages still coming) and until its page handler exits (every
                 page in); alternating with the copying restore and floors
  restore floor  pages.img read (preadv, 4 MiB chunks) into a fresh anonymous
                 mmap of its size, in this process; also a variant that
                 populates the mapping first (MADV_POPULATE_WRITE), as
                 pyckpt's restore does
  fork           the target times its own fork() (parent's return) and
                 fork+child _exit+waitpid, on SIGUSR2
  N copies       restore N copies of one image at once, each in a fresh PID
                 namespace (restore(..., new_pidns=True)), sequentially in
                 this process: time from the first restore call until all N
                 run, and per copy; each copy checksummed (told apart by its
                 outer PID), then killed and its namespace's init reaped.
                 Beside it: the target forks N children that stay alive at
                 once (sigqueue SIGUSR2 with value N), until all have run.
                 N = --copies (default 1,8); an N that does not fit in
                 available RAM with 4 GiB to spare is skipped with a note
  injection      µs per injected getpid() with pyckpt.inject.Injector on the
                 sleeping target, pinned to its CPU (as dump does) and not
  components     what the floors and pyckpt are made of: process_vm_readv only,
                 write to a fresh file only, the same with O_DIRECT and
                 fdatasync (a durable dump's), xxh3 of a cached buffer, pread
                 from page cache into a reused buffer, first touch of fresh
                 anonymous memory
  profile        one extra dump and restore with pyckpt's process_vm_readv
                 (with a dump's zero checks and xxh3 in C: ck_read_pieces),
                 write, preadv and xxh3 calls timed (module attributes wrapped
                 for that run only); not part of the timed samples

With --criu PATH, a second table puts CRIU (the criu binary at PATH) beside
pyckpt's command (`pyckpt dump`, `pyckpt restore`, timed whole) and API, on
targets of --criu-sizes MiB (default 4 and --sizes), in alternating order:
dump with the target left running, restore until the process runs (each
restored process checked, killed and reaped before the next), dump then kill
(a fresh target per run); ratio = CRIU's median / pyckpt's.  See README.md.

Dump and its floor alternate (so do restore and its floors), each starts
right after the previous output was deleted, and one untimed round comes
first: in a VM with free page reporting, memory freed a while ago costs a
host fault on first touch, so the memory state, not only the code, decides
a run's time.  Expect run-to-run spread; use --repeat 5 or more and look at
both median and best (all samples are in the JSON).

Only processes this script started (the targets) or restored (its own
children, or with new_pidns the children of the namespace inits it made) are
ever signalled, by PID, and they are always reaped (a copy by reaping its
namespace's init).  All files
live in one temporary directory under /tmp, removed at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import xxhash

import pyckpt
from pyckpt import proc
from pyckpt._native._ck import ffi, lib
from pyckpt.inject import Injector, injection_site_from, nr
from pyckpt.kinds.context import RestoreOptions
from pyckpt.progress import Progress
from pyckpt.restorer import RestoreStats
from pyckpt.restorer import restore as pyckpt_restore
from pyckpt.seize import Seized, pinned_to_cpu

HERE = Path(__file__).resolve().parent
MiB = 1 << 20
GiB = 1 << 30
CHUNK = 4 * MiB  # pyckpt's memory CHUNK; also used by the floors
SPARE_RAM = 4 * GiB  # N copies run only if N x size fits in available RAM with this to spare

_libc = ctypes.CDLL(None, use_errno=True)
_libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
_libc.memset.restype = ctypes.c_void_p
# sigqueue(pid, sig, union sigval): the union (int or pointer) goes in one
# integer register, so pass it as a pointer-sized integer.
_libc.sigqueue.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
_libc.sigqueue.restype = ctypes.c_int


# --- processes we own ---------------------------------------------------------

_owned: set[int] = set()  # PIDs of live children we started or restored


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
        return int(text[text.rindex(")") + 2:].split()[1])
    except (OSError, ValueError):
        return None


def kill_own(pid: int) -> None:
    """SIGKILL and reap `pid` — only if we started it and it is still our child."""
    if pid not in _owned:
        return
    _owned.discard(pid)
    if _parent_of(pid) != os.getpid():
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# With new_pidns a copy is the child of its namespace's init, and that init
# is our child (it is in _owned).  copy's outer PID -> its init's PID.
_copies: dict[int, int] = {}


def end_copy(pid: int, timeout: float = 10.0) -> None:
    """End a copy restored with new_pidns: SIGKILL it, then reap its namespace's init.

    The init exits once the copy has ended; if it does not within `timeout`,
    it is SIGKILLed (that ends everything in its namespace) and reaped.
    """
    init = _copies.pop(pid, None)
    if init is None or init not in _owned:
        return
    if _parent_of(init) != os.getpid():  # not our child (any more): touch nothing
        _owned.discard(init)
        return
    if _parent_of(pid) == init:  # still the copy we restored
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(init, os.WNOHANG)
        except ChildProcessError:
            done = init
        if done == init:
            _owned.discard(init)
            return
        time.sleep(0.002)
    kill_own(init)  # SIGKILL the init: the whole namespace ends; then reap it


class Log:
    """The target's stdout (opened O_APPEND, so a restored copy appends too)."""

    def __init__(self, path: Path):
        self.path = path

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_for(self, pattern: str, since: int = 0, count: int = 1, timeout: float = 60.0) -> list[re.Match]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            with open(self.path, "rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
            found = [m for m in (rx.search(line) for line in text.splitlines()) if m]
            if len(found) >= count:
                return found[:count]
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {count}x {pattern!r} in {self.path} after byte {since} "
                                   f"within {timeout}s; log tail: {text[-500:]!r}")
            time.sleep(0.005)


class Target:
    def __init__(self, exe: Path, mib: int, workdir: Path, nfork: int):
        self.log = Log(workdir / f"target-{mib}.log")
        since = self.log.size()  # a later target of the same size appends to the same log
        with open(os.devnull, "rb") as devnull, open(self.log.path, "ab") as out:
            self.popen = subprocess.Popen(
                [str(exe), str(mib), str(nfork)], stdin=devnull, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )
        self.pid = self.popen.pid
        _owned.add(self.pid)
        m = self.log.wait_for(r"READY pid=(\d+) addr=(0x[0-9a-f]+) len=(\d+) sum=([0-9a-f]+)",
                              since, timeout=120)[0]
        assert int(m.group(1)) == self.pid
        self.addr, self.len, self.sum = int(m.group(2), 16), int(m.group(3)), m.group(4)

    def checksum_ok(self, pid: int | None = None) -> bool:
        """Ask the (possibly restored) process for its memory checksum."""
        return self.checksums_ok([pid or self.pid])

    def checksums_ok(self, pids: list[int], inner: int | None = None, timeout: float = 120.0) -> bool:
        """SIGUSR1 each process in `pids` (the PIDs we see) and check each one's SUM line.

        All copies append to the same log, so a line belongs to the process
        whose outer PID (first in its NSpid) it names.  `inner` is the PID
        the processes see themselves as (getpid(), last in NSpid): the
        image's PID for copies in their own PID namespace; by default the
        same as the outer one.
        """
        since = self.log.size()
        for pid in pids:
            os.kill(pid, signal.SIGUSR1)
        rx = re.compile(r"^SUM ([0-9a-f]+) getpid=(\d+) nspid=([\d,]+)$")
        want, got = set(pids), {}
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log.path, "rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
            for line in text.splitlines():
                m = rx.match(line)
                if not m:
                    continue
                ns = [int(x) for x in m.group(3).split(",")]
                if ns[0] in want and ns[0] not in got:
                    me = ns[0] if inner is None else inner
                    got[ns[0]] = m.group(1) == self.sum and int(m.group(2)) == me and ns[-1] == me
            if len(got) == len(want):
                return all(got.values())
            if time.monotonic() > deadline:
                raise RuntimeError(f"no SUM line from {sorted(want - set(got))} within {timeout}s; "
                                   f"log tail: {text[-500:]!r}")
            time.sleep(0.005)

    def kill(self) -> None:
        if self.pid in _owned:
            _owned.discard(self.pid)
            self.popen.kill()
            self.popen.wait()


def big_vma(pid: int, addr: int, length: int) -> dict:
    for m in proc.read_maps(pid):
        if m.start <= addr < m.end:
            if addr + length > m.end:
                raise RuntimeError(f"target memory {addr:#x}+{length} spans several VMAs")
            return {"start": m.start, "end": m.end, "perms": m.perms, "name": m.path}
    raise RuntimeError(f"no VMA at {addr:#x} in process {pid}")


# --- measurements ---------------------------------------------------------------


def run_delay() -> float:
    """Seconds this thread has waited on a run queue so far (/proc/thread-self/schedstat)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def fresh_path(d: Path, name: str) -> Path:
    p = d / name
    if p.exists():
        p.unlink()
    return p


def dump_floor(t: Target, workdir: Path, buf, buflen: int) -> float:
    path = fresh_path(workdir, "floor.bin")
    w0 = run_delay()
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        if hasattr(lib, "ck_fallocate"):
            lib.ck_fallocate(fd, 1, 0, t.len)  # FALLOC_FL_KEEP_SIZE (PageStoreWriter.allocate)
        r = lib.ck_vm_read_to_file(t.pid, t.addr, t.len, fd, buf, buflen)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    if r != t.len:
        raise RuntimeError(f"ck_vm_read_to_file returned {r}")
    return dt, run_delay() - w0


def clear_outputs(workdir: Path, imgdir: Path | None) -> None:
    """Remove the previous floor file and image right before the next measurement.

    Both the dump and its floor then start just after ~N MiB of page cache
    was freed (in this VM freed memory is soon reported to the host, and
    touching it again costs a host fault: measuring one right after a free
    and the other long after one would compare memory states, not code).
    """
    p = workdir / "floor.bin"
    if p.exists():
        p.unlink()
    if imgdir is not None and imgdir.exists():
        shutil.rmtree(imgdir)


def do_dump(t: Target, imgdir: Path, precopy: bool = False) -> dict:
    w0 = run_delay()
    t0 = time.perf_counter()
    image = pyckpt.dump(t.pid, imgdir, precopy=precopy, progress=Progress(enabled=False))
    wall = time.perf_counter() - t0
    s = image.dump_stats
    return {"time": wall, "run_delay": run_delay() - w0, "bytes": s.pages_bytes, "freeze": s.freeze, "total_in_dump": s.total,
            "injected_calls": s.injected_calls, "phases": dict(s.phases), "precopy_reused": s.precopy_reused}


MADV_POPULATE_WRITE = 23


def restore_floor(pages: Path, populate: bool = False) -> tuple[float, int]:
    """Read pages.img into a fresh anonymous mapping; with `populate`, populate it first."""
    size = pages.stat().st_size
    fd = os.open(pages, os.O_RDONLY | os.O_CLOEXEC)
    try:
        t0 = time.perf_counter()
        mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if populate:
            mm.madvise(MADV_POPULATE_WRITE)
        view = memoryview(mm)
        done = 0
        while done < size:
            n = os.preadv(fd, [view[done:done + min(CHUNK, size - done)]], done)
            if n <= 0:
                raise RuntimeError("short read of pages.img")
            done += n
        dt = time.perf_counter() - t0
        view.release()
        mm.close()
    finally:
        os.close(fd)
    return dt, size


# The target's only regular file is its stdout log (O_APPEND), and it grows
# after every dump (SUM and FORK lines): restore must not refuse it.
RESTORE_OPTIONS = RestoreOptions(allow_changed_files=True)


def do_restore(t: Target, imgdir: Path) -> dict:
    st = RestoreStats()
    t0 = time.perf_counter()
    p = pyckpt_restore(imgdir, progress=Progress(enabled=False), stats=st, options=RESTORE_OPTIONS)
    wall = time.perf_counter() - t0
    _owned.add(p.pid)
    if p.pid != t.pid:
        raise RuntimeError(f"restored PID {p.pid}, dumped {t.pid}")
    ok = t.checksum_ok(p.pid)
    kill_own(p.pid)
    if not ok:
        raise RuntimeError("restored process has different memory (checksum mismatch)")
    return {"time": wall, "bytes": st.pages_bytes, "total_in_restore": st.total,
            "injected_calls": st.injected_calls, "phases": dict(st.phases)}


class _Acc(dict):
    def timed(self, key, fn, *a):
        t0 = time.perf_counter()
        try:
            return fn(*a)
        finally:
            self[key] = self.get(key, 0.0) + time.perf_counter() - t0


class _HashProxy:
    def __init__(self, h, acc):
        self._h, self._acc = h, acc

    def update(self, data):
        self._acc.timed("xxh3", self._h.update, data)

    def __getattr__(self, name):
        return getattr(self._h, name)


class _XxhashProxy:
    def __init__(self, acc):
        self._acc = acc

    def xxh3_64_intdigest(self, data):
        return self._acc.timed("xxh3", xxhash.xxh3_64_intdigest, data)

    def xxh3_64(self, *a):
        return _HashProxy(xxhash.xxh3_64(*a), self._acc)

    def __getattr__(self, name):
        return getattr(xxhash, name)


class _LibProxy:
    def __init__(self, acc):
        self._acc = acc

    def ck_vm_read(self, *a):
        return self._acc.timed("process_vm_readv", lib.ck_vm_read, *a)

    def ck_read_pieces(self, *a):  # (a dump's reads, with the zero checks and xxh3 of the pieces)
        return self._acc.timed("process_vm_readv + xxh3", lib.ck_read_pieces, *a)

    def __getattr__(self, name):
        return getattr(lib, name)


class _OsProxy:
    def __init__(self, acc):
        self._acc = acc

    def preadv(self, *a):
        return self._acc.timed("preadv", os.preadv, *a)

    def write(self, *a):
        return self._acc.timed("write", os.write, *a)

    def __getattr__(self, name):
        return getattr(os, name)


def profiled(fn, *a):
    """Run fn with pyckpt's page I/O and hashing timed (extra, untimed-for-table runs).

    Wraps, in pyckpt.image and pyckpt.kinds.memory only: xxhash, os.preadv,
    os.write and lib.ck_vm_read.  Returns (result, {what: seconds}).
    """
    import pyckpt.image as image_mod
    import pyckpt.kinds.memory as memory_mod

    acc = _Acc()
    saved = [(image_mod, "xxhash", image_mod.xxhash), (image_mod, "os", image_mod.os),
             (memory_mod, "lib", memory_mod.lib), (memory_mod, "os", memory_mod.os)]
    image_mod.xxhash = _XxhashProxy(acc)
    image_mod.os = _OsProxy(acc)
    memory_mod.lib = _LibProxy(acc)
    memory_mod.os = _OsProxy(acc)
    try:
        return fn(*a), dict(acc)
    finally:
        for mod, name, val in saved:
            setattr(mod, name, val)


def fork_times(t: Target, n: int) -> list[dict]:
    since = t.log.size()
    os.kill(t.pid, signal.SIGUSR2)
    ms = t.log.wait_for(r"FORK fork_us=([\d.]+) total_us=([\d.]+)", since, count=n)
    return [{"fork": float(m.group(1)) / 1e6, "fork_exit_wait": float(m.group(2)) / 1e6} for m in ms]


def forkn_times(t: Target, n: int) -> dict:
    """The target forks n children that stay alive at once (sigqueue SIGUSR2, value n)."""
    since = t.log.size()
    if _libc.sigqueue(t.pid, signal.SIGUSR2, n) != 0:
        raise OSError(ctypes.get_errno(), f"sigqueue to {t.pid}")
    m = t.log.wait_for(r"^FORKN (?:error.*|n=(\d+) forks_us=([\d.]+) running_us=([\d.]+) "
                       r"max_fork_us=([\d.]+) reaped_us=([\d.]+))$", since)[0]
    if m.group(1) is None or int(m.group(1)) != n:
        raise RuntimeError(f"target could not fork {n} children: {m.group(0)!r}")
    forks, running, slowest, reaped = (float(m.group(i)) / 1e6 for i in range(2, 6))
    return {"n": n, "forks": forks, "running": running, "per_fork": forks / n, "max_fork": slowest,
            "reaped": reaped}


def ram_note(n: int, size: int) -> str | None:
    """Why n copies of `size` bytes would not fit now (None when they fit)."""
    avail = psutil.virtual_memory().available
    need = n * size + SPARE_RAM
    if avail >= need:
        return None
    return (f"{n} copies x {size / MiB:.0f} MiB skipped: {avail / GiB:.1f} GiB available, "
            f"need {need / GiB:.1f} GiB ({SPARE_RAM / GiB:.0f} GiB to spare)")


def restore_copies(t: Target, imgdir: Path, n: int) -> dict:
    """Restore n copies of the image, one after the other, each in a fresh PID namespace.

    Timed from the first restore call until the last returns (every copy
    then runs), and per restore call.  Then each copy is checksummed (it
    sees itself as the image's PID, t.pid), killed, and its init reaped.
    """
    pids: list[int] = []
    lat, stats = [], []
    opts = RestoreOptions(allow_changed_files=True, new_pidns=True)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            st = RestoreStats()
            c0 = time.perf_counter()
            p = pyckpt_restore(imgdir, progress=Progress(enabled=False), stats=st, options=opts)
            end = time.perf_counter()
            lat.append(end - c0)
            stats.append(st)
            init = p.ppid()  # between restores: a few µs of /proc in the total
            _owned.add(init)
            _copies[p.pid] = init
            pids.append(p.pid)
        total = end - t0
        if len(set(pids)) != n:
            raise RuntimeError(f"copies share outer PIDs: {pids}")
        for pid in pids:
            init = _copies[pid]
            if _parent_of(init) != os.getpid() or _parent_of(pid) != init:
                raise RuntimeError(f"copy {pid}: parent is not its namespace's init {init}")
        if not t.checksums_ok(pids, inner=t.pid):
            raise RuntimeError("a restored copy has different memory or PIDs (checksum mismatch)")
        k0 = time.perf_counter()
        for pid in pids:
            end_copy(pid)
        teardown = time.perf_counter() - k0
    finally:
        for pid in pids:
            end_copy(pid)
    return {"n": n, "time": total, "per_copy": lat, "teardown": teardown,
            "bytes": stats[0].pages_bytes, "injected_calls": stats[0].injected_calls,
            "phases": [dict(st.phases) for st in stats]}


def inject_bench(t: Target, pinned_calls: int = 2000, unpinned_calls: int = 50) -> dict:
    pid = t.pid
    vdso = next(m for m in proc.read_maps(pid) if m.path == "[vdso]")
    out = {}
    for label, ncalls, pin in (("pinned", pinned_calls, True), ("unpinned", unpinned_calls, False)):
        cpu = proc.read_stat(pid).processor
        if not pin:  # run on a CPU other than the target's, if there is one
            others = sorted(os.sched_getaffinity(0) - {cpu})
            if not others:
                continue
        ctx = pinned_to_cpu(cpu if pin else others[0])
        with ctx:
            t0 = time.perf_counter()
            with Seized(pid):
                t1 = time.perf_counter()
                site = injection_site_from(pid, vdso.start, vdso.size)
                with Injector(pid, site) as inj:
                    t2 = time.perf_counter()
                    for _ in range(ncalls):
                        if inj.call(nr.getpid) != pid:
                            raise RuntimeError("injected getpid returned the wrong PID")
                    t3 = time.perf_counter()
                t4 = time.perf_counter()
            t5 = time.perf_counter()
        out[label] = {"per_call": (t3 - t2) / ncalls, "calls": ncalls,
                      "seize": t1 - t0, "detach": t5 - t4, "injector_setup": t2 - t1}
    return out


def components(t: Target, workdir: Path, pages: Path, buf, reps: int) -> dict:
    """Throughputs (bytes/s) of the pieces the floors and pyckpt are built of."""
    res: dict[str, list[float]] = {k: [] for k in
                                   ("vm_read", "write_fresh_file", "write_direct", "xxh3", "pread_cached",
                                    "first_touch")}
    n = t.len
    view = ffi.buffer(buf, CHUNK)
    for _ in range(reps):
        # process_vm_readv into one reused buffer, nothing written
        t0 = time.perf_counter()
        for off in range(0, n, CHUNK):
            if lib.ck_vm_read(t.pid, t.addr + off, buf, min(CHUNK, n - off)) != min(CHUNK, n - off):
                raise RuntimeError("ck_vm_read failed")
        res["vm_read"].append(n / (time.perf_counter() - t0))
        # write of a reused (cached, non-zero) buffer to a fresh file: page cache allocation
        path = fresh_path(workdir, "write.bin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        t0 = time.perf_counter()
        for off in range(0, n, CHUNK):
            mv = memoryview(view)[: min(CHUNK, n - off)]
            done = 0
            while done < len(mv):
                done += os.write(fd, mv[done:])
        os.close(fd)
        res["write_fresh_file"].append(n / (time.perf_counter() - t0))
        path.unlink()
        # the same to the disk, as a dump with kill writes its memory: O_DIRECT from a
        # page-aligned buffer, then fdatasync (no page cache; the floor of a durable dump)
        aligned = mmap.mmap(-1, CHUNK)
        aligned[:] = bytes(view)
        path = fresh_path(workdir, "direct.bin")
        t0 = time.perf_counter()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o600)
        except OSError:  # no O_DIRECT on this filesystem
            fd = -1
        if fd >= 0:
            for off in range(0, n, CHUNK):
                mv = memoryview(aligned)[: min(CHUNK, n - off)]
                done = 0
                while done < len(mv):
                    done += os.pwrite(fd, mv[done:], off + done)
            mv = None  # (a view of `aligned` left would keep it from closing: BufferError)
            os.fdatasync(fd)
            os.close(fd)
            res["write_direct"].append(n / (time.perf_counter() - t0))
            path.unlink()
        aligned.close()
        # xxh3 of a 4 MiB buffer that was just written (as dump hashes it)
        t0 = time.perf_counter()
        for off in range(0, n, CHUNK):
            xxhash.xxh3_64_intdigest(memoryview(view)[: min(CHUNK, n - off)])
        res["xxh3"].append(n / (time.perf_counter() - t0))
        # pread of pages.img (in page cache) into a reused buffer: no page faults
        size = pages.stat().st_size
        fd = os.open(pages, os.O_RDONLY)
        t0 = time.perf_counter()
        for off in range(0, size, CHUNK):
            os.preadv(fd, [memoryview(view)[: min(CHUNK, size - off)]], off)
        res["pread_cached"].append(size / (time.perf_counter() - t0))
        os.close(fd)
        # first touch of fresh anonymous memory (fault + zero + one write per byte)
        t0 = time.perf_counter()
        mm = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        _libc.memset(addr, 1, n)
        res["first_touch"].append(n / (time.perf_counter() - t0))
        del addr
        mm.close()
    return {k: summary(v, higher_is_better=True) for k, v in res.items() if v}


# --- statistics and output ---------------------------------------------------------


def summary(xs: list[float], higher_is_better: bool = False) -> dict:
    return {"best": (max if higher_is_better else min)(xs), "median": statistics.median(xs),
            "worst": (min if higher_is_better else max)(xs), "samples": xs}


def phase_medians(runs: list[dict]) -> dict[str, float]:
    keys: list[str] = []
    for r in runs:
        for k in r["phases"]:
            if k not in keys:
                keys.append(k)
    return {k: statistics.median(r["phases"].get(k, 0.0) for r in runs) for k in keys}


def do_lazy_restore(t: Target, imgdir: Path) -> dict:
    """restore(lazy=True): time until it returns (the process runs), and until its page
    handler exits (every page is in; polled on a pidfd of the handler).  The handler is
    reparented to this script (a subreaper meanwhile) and reaped (it reaps its guard); the
    restored process is checked (checksum), killed and reaped."""
    import dataclasses
    import select

    set_subreaper(True)
    try:
        st = RestoreStats()
        t0 = time.perf_counter()
        p = pyckpt_restore(imgdir, progress=Progress(enabled=False), stats=st,
                           options=dataclasses.replace(RESTORE_OPTIONS, lazy=True))
        running = time.perf_counter() - t0
        _owned.add(p.pid)
        handlers = p.lazy_handlers
        for h in handlers:
            fd = os.pidfd_open(h.handler)
            select.select([fd], [], [])
            os.close(fd)
        all_in = time.perf_counter() - t0
        for h in handlers:
            os.waitpid(h.handler, 0)  # it reaps its guard
    finally:
        set_subreaper(False)
    ok = t.checksum_ok(p.pid)
    kill_own(p.pid)
    if not ok:
        raise RuntimeError("lazily restored process has different memory (checksum mismatch)")
    return {"running": running, "all_pages": all_in, "validate": st.phases.get("VALIDATE", 0.0)}


def bench_size(exe: Path, mib: int, reps: int, workdir: Path, floor_buf: int, warmup: bool = True,
               profile: bool = True, copies: tuple[int, ...] = (1, 8),
               log=print) -> dict:
    nfork = max(reps, 5)
    log(f"[{mib} MiB] starting target")
    t = Target(exe, mib, workdir, nfork)
    imgdir = workdir / f"img-{mib}"
    res: dict = {"size_mib": mib, "target_pid": t.pid}
    try:
        res["vma"] = big_vma(t.pid, t.addr, t.len)
        res["fork"] = fork_times(t, nfork)
        forkn: dict[int, list[dict]] = {n: [] for n in copies}
        for i in range(reps):
            for n in copies:
                forkn[n].append(forkn_times(t, n))
        log(f"[{mib} MiB] injection micro-bench")
        res["inject"] = inject_bench(t)

        buf = ffi.new("char[]", floor_buf)  # zeroed, so already touched
        if warmup:  # one untimed round: first touches of this size's memory
            clear_outputs(workdir, imgdir)
            dump_floor(t, workdir, buf, floor_buf)
            clear_outputs(workdir, imgdir)
            do_dump(t, imgdir)
        if profile:
            clear_outputs(workdir, imgdir)
            d, acc = profiled(do_dump, t, imgdir)
            res["dump_profile"] = {"memory_phase": d["phases"].get("memory"), "time": d["time"], **acc}
        dumps, floors, floor_waits = [], [], []
        for i in range(reps):
            order = ("floor", "dump") if i % 2 == 0 else ("dump", "floor")
            for what in order:
                clear_outputs(workdir, imgdir)
                if what == "floor":
                    dt, wait = dump_floor(t, workdir, buf, floor_buf)
                    floors.append(dt)
                    floor_waits.append(wait)
                else:
                    dumps.append(do_dump(t, imgdir))
            log(f"[{mib} MiB] dump {i + 1}/{reps}: {dumps[-1]['time']:.3f} s, floor {floors[-1]:.3f} s")
        precopies = []
        for i in range(reps):  # the target sleeps: pass 1 holds everything at the freeze
            clear_outputs(workdir, imgdir)
            precopies.append(do_dump(t, imgdir, precopy=True))
        log(f"[{mib} MiB] pre-copy dumps: freeze {[round(d['freeze'] * 1000, 1) for d in precopies]} ms")
        res["precopy"] = {
            "time": summary([d["time"] for d in precopies]),
            "freeze": summary([d["freeze"] for d in precopies]),
            "reused_bytes": precopies[0]["precopy_reused"],
            "runs": precopies,
        }
        clear_outputs(workdir, imgdir)
        do_dump(t, imgdir)  # the image the restore rows use: a plain one
        clear_outputs(workdir, None)  # the floor file only
        if not t.checksum_ok():
            raise RuntimeError("target memory changed across dumps")
        pages = imgdir / "pages.img"
        log(f"[{mib} MiB] components")
        cbuf = ffi.new("char[]", CHUNK)
        ffi.buffer(cbuf, CHUNK)[:] = b"\x5a" * CHUNK
        res["components"] = components(t, workdir, pages, cbuf, reps)

        t.kill()
        if warmup:
            restore_floor(pages)
            do_restore(t, imgdir)
        if profile:
            r, acc = profiled(do_restore, t, imgdir)
            res["restore_profile"] = {"VALIDATE": r["phases"].get("VALIDATE"),
                                      "PAGES": r["phases"].get("PAGES"), "time": r["time"], **acc}
        restores, rfloors, rfloors_pop, lazies = [], [], [], []
        for i in range(reps):
            order = ("floor", "floor_pop", "restore", "lazy") if i % 2 == 0 else \
                ("lazy", "restore", "floor_pop", "floor")
            for what in order:
                if what == "lazy":
                    lazies.append(do_lazy_restore(t, imgdir))
                elif what == "floor":
                    rfloors.append(restore_floor(pages))
                elif what == "floor_pop":
                    rfloors_pop.append(restore_floor(pages, populate=True))
                else:
                    restores.append(do_restore(t, imgdir))
            log(f"[{mib} MiB] restore {i + 1}/{reps}: {restores[-1]['time']:.3f} s, "
                f"floor {rfloors[-1][0]:.3f} s, floor+populate {rfloors_pop[-1][0]:.3f} s, "
                f"lazy: running {lazies[-1]['running']:.3f} s, all pages {lazies[-1]['all_pages']:.3f} s")
        res["lazy_restore"] = {"running": summary([x["running"] for x in lazies]),
                               "all_pages": summary([x["all_pages"] for x in lazies]),
                               "validate": summary([x["validate"] for x in lazies]), "runs": lazies}

        copy_runs: dict[int, list[dict]] = {n: [] for n in copies}
        notes: dict[int, str] = {}
        if warmup and copies:  # untimed: first touch of the most memory the copies will need
            n = max(copies)
            if ram_note(n, t.len) is None:
                restore_copies(t, imgdir, n)
        for i in range(reps):
            for n in (copies if i % 2 == 0 else copies[::-1]):
                if n in notes:
                    continue
                note = ram_note(n, t.len)
                if note:
                    notes[n] = note if not copy_runs[n] else f"{note} (after {len(copy_runs[n])} runs)"
                    log(f"[{mib} MiB] note: {notes[n]}")
                    continue
                r = restore_copies(t, imgdir, n)
                copy_runs[n].append(r)
                log(f"[{mib} MiB] {n} copies {i + 1}/{reps}: {r['time']:.3f} s "
                    f"({r['time'] / n:.3f} s per copy); {n} forks running in "
                    f"{forkn[n][i]['running'] * 1e3:.1f} ms")
    finally:
        t.kill()
        if imgdir.exists():
            shutil.rmtree(imgdir)

    dump_bytes = dumps[0]["bytes"]
    rest_bytes = restores[0]["bytes"]
    rfloor_bytes = rfloors[0][1]
    res["dump"] = {
        "time": summary([d["time"] for d in dumps]),
        "throughput": summary([d["bytes"] / d["time"] for d in dumps], True),
        "stored_bytes": dump_bytes,
        "freeze": summary([d["freeze"] for d in dumps]),
        "run_delay": summary([d["run_delay"] for d in dumps]),
        "injected_calls": dumps[0]["injected_calls"],
        "phases_median": phase_medians(dumps),
        "runs": dumps,
    }
    res["dump_floor"] = {
        "time": summary(floors),
        "throughput": summary([t.len / f for f in floors], True),
        "bytes": t.len, "buffer": floor_buf, "run_delay": summary(floor_waits),
    }
    res["restore"] = {
        "time": summary([r["time"] for r in restores]),
        "throughput": summary([r["bytes"] / r["time"] for r in restores], True),
        "page_bytes": rest_bytes,
        "injected_calls": restores[0]["injected_calls"],
        "phases_median": phase_medians(restores),
        "runs": restores,
    }
    res["restore_floor"] = {
        "time": summary([f for f, _ in rfloors]),
        "throughput": summary([rfloor_bytes / f for f, _ in rfloors], True),
        "bytes": rfloor_bytes,
    }
    res["restore_floor_populate"] = {
        "time": summary([f for f, _ in rfloors_pop]),
        "throughput": summary([rfloor_bytes / f for f, _ in rfloors_pop], True),
        "bytes": rfloor_bytes,
    }
    res["copies"] = {}
    for n in copies:
        runs, fk = copy_runs[n], forkn[n]
        c: dict = {"n": n, "fork_n": {
            "forks": summary([f["forks"] for f in fk]),
            "running": summary([f["running"] for f in fk]),
            "per_fork": summary([f["per_fork"] for f in fk]),
            "max_fork": summary([f["max_fork"] for f in fk]),
            "reaped": summary([f["reaped"] for f in fk]),
            "runs": fk,
        }}
        if n in notes:
            c["skipped"] = notes[n]
        if runs:
            per_copy = [x for r in runs for x in r["per_copy"]]
            phases = [{"time": x, "phases": ph} for r in runs for x, ph in zip(r["per_copy"], r["phases"])]
            c.update({
                "time": summary([r["time"] for r in runs]),
                "per_copy": summary(per_copy),
                "per_copy_mean": summary([r["time"] / n for r in runs]),
                "slowest_copy": summary([max(r["per_copy"]) for r in runs]),
                "throughput": summary([n * r["bytes"] / r["time"] for r in runs], True),
                "teardown": summary([r["teardown"] for r in runs]),
                "vs_fork": statistics.median(r["time"] for r in runs) / c["fork_n"]["running"]["median"],
                "phases_median": phase_medians(phases),
                "runs": runs,
            })
        res["copies"][str(n)] = c
    res["fork_summary"] = {
        "fork": summary([f["fork"] for f in res["fork"]]),
        "fork_exit_wait": summary([f["fork_exit_wait"] for f in res["fork"]]),
    }
    for k, fl in (("dump", "dump_floor"), ("restore", "restore_floor")):
        res[f"{k}_vs_floor"] = {
            "median": res[k]["throughput"]["median"] / res[fl]["throughput"]["median"],
            "best": res[k]["throughput"]["best"] / res[fl]["throughput"]["best"],
        }
    return res


def fmt_table(results: list[dict]) -> str:
    def mibs(x):
        return f"{x / MiB:,.0f}"

    def ms(x):
        return f"{x * 1e3:,.1f}"

    def us(x):
        return f"{x * 1e6:,.1f}"

    rows: list[tuple[str, list[str]]] = []

    def row(label, get, fmt):
        cells = []
        for r in results:
            try:
                v = get(r)
            except (KeyError, TypeError):
                cells.append("-")
                continue
            if isinstance(v, str):
                cells.append(v)
            elif isinstance(v, dict):
                cells.append(f"{fmt(v['median'])} [{fmt(v['best'])}]")
            else:
                cells.append(fmt(v))
        rows.append((label, cells))

    row("stored bytes (MiB)", lambda r: r["dump"]["stored_bytes"], mibs)
    row("dump time (ms)", lambda r: r["dump"]["time"], ms)
    row("dump throughput (MiB/s)", lambda r: r["dump"]["throughput"], mibs)
    row("dump floor time (ms)", lambda r: r["dump_floor"]["time"], ms)
    row("dump floor throughput (MiB/s)", lambda r: r["dump_floor"]["throughput"], mibs)
    row("dump / floor", lambda r: r["dump_vs_floor"], lambda x: f"{x:.2f}")
    row("  runqueue wait: dump (ms)", lambda r: r["dump"]["run_delay"], ms)
    row("  runqueue wait: dump floor (ms)", lambda r: r["dump_floor"]["run_delay"], ms)
    row("freeze (ms)", lambda r: r["dump"]["freeze"], ms)
    row("freeze with --precopy (ms)", lambda r: r["precopy"]["freeze"], ms)
    row("  dump time with --precopy (ms)", lambda r: r["precopy"]["time"], ms)
    row("fork() (ms)", lambda r: r["fork_summary"]["fork"], ms)
    row("fork+exit+wait (ms)", lambda r: r["fork_summary"]["fork_exit_wait"], ms)
    row("restore latency (ms)", lambda r: r["restore"]["time"], ms)
    row("restore throughput (MiB/s)", lambda r: r["restore"]["throughput"], mibs)
    row("restore floor time (ms)", lambda r: r["restore_floor"]["time"], ms)
    row("restore floor throughput (MiB/s)", lambda r: r["restore_floor"]["throughput"], mibs)
    row("restore / floor", lambda r: r["restore_vs_floor"], lambda x: f"{x:.2f}")
    row("  floor w/ MADV_POPULATE_WRITE (MiB/s)", lambda r: r["restore_floor_populate"]["throughput"], mibs)
    row("lazy restore: running (ms)", lambda r: r["lazy_restore"]["running"], ms)
    row("  of which VALIDATE (ms)", lambda r: r["lazy_restore"]["validate"], ms)
    row("lazy restore: all pages in (ms)", lambda r: r["lazy_restore"]["all_pages"], ms)
    row("  all pages in / copying restore", lambda r: r["lazy_restore"]["all_pages"]["median"]
        / r["restore"]["time"]["median"], lambda x: f"{x:.2f}")
    row("injected call, pinned (us)", lambda r: r["inject"]["pinned"]["per_call"], us)
    row("injected call, other CPU (us)", lambda r: r["inject"]["unpinned"]["per_call"], us)
    row("seize+interrupt, pinned (us)", lambda r: r["inject"]["pinned"]["seize"], us)
    row("injected calls: dump / restore",
        lambda r: f"{r['dump']['injected_calls']} / {r['restore']['injected_calls']}", str)
    for n in sorted({int(k) for r in results for k in r.get("copies", {})}):
        def cp(r, *keys, n=n):
            c = r["copies"][str(n)]
            if "time" not in c and keys[0] != "fork_n":
                return "skipped (RAM)" if "skipped" in c and keys == ("time",) else "-"
            for k in keys:
                c = c[k]
            return c
        what = "1 copy" if n == 1 else f"{n} copies"
        row(f"restore {what} of one image, all running (ms)", lambda r: cp(r, "time"), ms)
        row("  per copy: restore call (ms)", lambda r: cp(r, "per_copy"), ms)
        if n > 1:
            row(f"  per copy: all running / {n} (ms)", lambda r: cp(r, "per_copy_mean"), ms)
            row("  slowest copy (ms)", lambda r: cp(r, "slowest_copy"), ms)
        def stages(r, n=n):
            v = cp(r, "phases_median", n=n)
            return v if isinstance(v, str) else f"{ms(v['VALIDATE'])} / {ms(v['PAGES'])}"
        row("  per copy: VALIDATE / PAGES (ms)", stages, str)
        row("  all copies: page bytes / time (MiB/s)", lambda r: cp(r, "throughput"), mibs)
        row(f"  {n} x fork(), all running (ms)", lambda r: cp(r, "fork_n", "running"), ms)
        row("    per fork() (ms)", lambda r: cp(r, "fork_n", "per_fork"), ms)
        row(f"  {what} / {n} fork{'s' if n > 1 else ''} (median)", lambda r: cp(r, "vs_fork"),
            lambda x: f"{x:,.0f}x")
    for k, label in (("vm_read", "process_vm_readv only"), ("write_fresh_file", "write to fresh file"),
                     ("write_direct", "write to disk, O_DIRECT+fdatasync"),
                     ("xxh3", "xxh3_64 (cached buf)"), ("pread_cached", "pread cached, reused buf"),
                     ("first_touch", "first touch anon mem")):
        row(f"  {label} (MiB/s)", lambda r, k=k: r["components"][k], mibs)

    head = ["metric: median [best]"] + [f"{r['size_mib']} MiB" for r in results]
    w0 = max(len(head[0]), *(len(l) for l, _ in rows))
    ws = [max(len(head[i + 1]), *(len(c[i]) for _, c in rows)) for i in range(len(results))]
    lines = [head[0].ljust(w0) + "".join("  " + h.rjust(w) for h, w in zip(head[1:], ws))]
    lines.append("-" * len(lines[0]))
    for label, cells in rows:
        lines.append(label.ljust(w0) + "".join("  " + c.rjust(w) for c, w in zip(cells, ws)))

    for key, title in (("dump", "dump phases, median ms"), ("restore", "restore stages, median ms")):
        names: list[str] = []
        for r in results:
            for k in r[key]["phases_median"]:
                if k not in names:
                    names.append(k)
        extra = "(outside freeze)" if key == "dump" else "(outside stages)"
        lines.append("")
        lines.append(title.ljust(w0) + "".join("  " + f"{r['size_mib']} MiB".rjust(w) for r, w in zip(results, ws)))
        lines.append("-" * len(lines[0]))
        for n in names:
            lines.append(n.ljust(w0) + "".join(
                "  " + ms(r[key]["phases_median"].get(n, 0.0)).rjust(w) for r, w in zip(results, ws)))
        other = [statistics.median(run["time"] - sum(run["phases"].values()) for run in r[key]["runs"])
                 for r in results]
        lines.append(extra.ljust(w0) + "".join("  " + ms(o).rjust(w) for o, w in zip(other, ws)))
    prof = [("dump_profile", "profiled dump, ms"), ("restore_profile", "profiled restore, ms")]
    for key, title in prof:
        if not all(key in r for r in results):
            continue
        names = []
        for r in results:
            names += [k for k in r[key] if k not in names]
        lines.append("")
        lines.append(title.ljust(w0) + "".join("  " + f"{r['size_mib']} MiB".rjust(w) for r, w in zip(results, ws)))
        lines.append("-" * len(lines[0]))
        for n in names:
            lines.append(n.ljust(w0) + "".join(
                "  " + ms(r[key].get(n) or 0.0).rjust(w) for r, w in zip(results, ws)))
    notes = [c["skipped"] for r in results for c in r.get("copies", {}).values() if "skipped" in c]
    if notes:
        lines.append("")
        lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


# --- CRIU beside pyckpt (--criu PATH) ------------------------------------------------

PR_SET_CHILD_SUBREAPER = 36
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.prctl.restype = ctypes.c_int
CONTESTANTS = ("cli", "api", "criu")  # pyckpt's command, pyckpt's API, CRIU's command


def set_subreaper(on: bool) -> None:
    """`criu restore -d` and the `pyckpt restore` command exit and leave the restored process
    behind; as a child subreaper this script becomes its parent (instead of PID 1), so it
    checks, kills and reaps it like its other children."""
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def pyckpt_command() -> list[str]:
    """The `pyckpt` command of this Python (its console script, else `python -m pyckpt`)."""
    exe = Path(sys.executable).parent / "pyckpt"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pyckpt"]


def criu_version(criu: str) -> str:
    p = subprocess.run([criu, "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=30)
    m = re.search(r"Version:\s*(\S+)", p.stdout)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"{criu} --version failed (exit {p.returncode}): {p.stdout}{p.stderr}")
    return m.group(1)


def cli_env(workdir: Path) -> dict[str, str]:
    """The environment of the `pyckpt` command: with a bytecode cache, as an installed
    command has one.  Without it (PYTHONDONTWRITEBYTECODE=1, as in some shells) every
    start compiles pyckpt's sources again (~60 modules, 150-350 ms here); the cache goes
    into the work directory (PYTHONPYCACHEPREFIX) and is filled by an untimed first run."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def run_timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run a whole command (start-up included) until it exits; (seconds, its stdout)."""
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {p.returncode}: "
                           f"{p.stderr.decode(errors='replace')[-2000:]}")
    return dt, p.stdout.decode(errors="replace")


def dir_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.iterdir() if f.is_file())


def check_restored(t: Target, pid: int) -> None:
    """The restored process `pid` answers with the dumped checksum; then killed and reaped.

    It was restored by a command that has exited, so it is this script's child only
    through the subreaper flag: anything else is not touched and is an error."""
    if pid != t.pid:
        raise RuntimeError(f"restored PID {pid}, dumped {t.pid}")
    if _parent_of(pid) != os.getpid():
        raise RuntimeError(f"restored process {pid} is not this script's child (parent "
                           f"{_parent_of(pid)}); it was left alone")
    _owned.add(pid)
    try:
        ok = t.checksum_ok(pid)
    finally:
        kill_own(pid)
    if not ok:
        raise RuntimeError(f"restored process {pid} has different memory (checksum mismatch)")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def checksum_each(t: Target, copies: list[tuple[int, int]], inner: int, timeout: float = 120.0) -> bool:
    """Like Target.checksums_ok, one process at a time: a copy restored by CRIU under
    `unshare --mount-proc` reads its NSpid from its own /proc (the inner PID only), so
    copies are told apart by asking them one after the other.  `copies`: (PID, the
    criu that is its parent); a PID whose parent is not that criu is not signalled."""
    rx = re.compile(r"^SUM ([0-9a-f]+) getpid=(\d+) nspid=([\d,]+)$")
    for pid, parent in copies:
        if _parent_of(pid) != parent:
            raise RuntimeError(f"copy {pid} is no longer the child of its criu {parent}")
        since = t.log.size()
        os.kill(pid, signal.SIGUSR1)
        m = t.log.wait_for(rx.pattern, since, timeout=timeout)[0]
        if m.group(1) != t.sum or int(m.group(2)) != inner:
            return False
    return True


def criu_copies(t: Target, criu: str, imgdir: Path, n: int, workdir: Path) -> dict:
    """n copies of a CRIU image at once, one after the other, each by `unshare --pid --fork
    --mount-proc criu restore --pidfile F` (criu is its namespace's init and stays, as the
    copy's parent: `-d` would end the namespace).  A copy counts as running when criu has
    written its pidfile: after the memory and files, before the last resume steps.  Then
    each copy is checksummed, its criu (the namespace's init, our grandchild) SIGKILLed,
    which ends the namespace, and unshare reaped."""
    runs: list[tuple[subprocess.Popen, int]] = []  # (unshare, criu) per copy
    lat: list[float] = []
    try:
        t0 = time.perf_counter()
        for i in range(n):
            pidfile = workdir / f"criu-copy-{i}.pid"
            logf = workdir / f"criu-copy-{i}.log"
            for f in (pidfile, logf):
                if f.exists():
                    f.unlink()
            c0 = time.perf_counter()
            u = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", criu, "restore", "-D",
                                  str(imgdir), "--pidfile", str(pidfile), "-o", str(logf)],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            _owned.add(u.pid)
            runs.append((u, 0))
            while not (pidfile.exists() and pidfile.stat().st_size):
                if u.poll() is not None:
                    _owned.discard(u.pid)
                    tail = logf.read_text(errors="replace")[-1500:] if logf.exists() else ""
                    raise RuntimeError(f"unshare ... criu restore exited with {u.returncode}: {tail}")
                time.sleep(0.0005)
            end = time.perf_counter()
            lat.append(end - c0)
            kids = _children(u.pid)
            if len(kids) != 1:
                raise RuntimeError(f"unshare {u.pid}: children {kids}, expected criu alone")
            runs[-1] = (u, kids[0])
        total = end - t0
        copies = []
        for u, c in runs:
            kids = _children(c)
            if len(kids) != 1:
                raise RuntimeError(f"criu {c} (init of a copy's namespace): children {kids}")
            copies.append((kids[0], c))
        if not checksum_each(t, copies, inner=t.pid):
            raise RuntimeError("a copy restored by CRIU has different memory or PID (checksum mismatch)")
    finally:
        for u, c in runs:
            if c and _parent_of(c) == u.pid and u.poll() is None:
                try:
                    os.kill(c, signal.SIGKILL)  # the namespace's init: everything in it ends
                except ProcessLookupError:
                    pass
            if u.pid in _owned:
                _owned.discard(u.pid)
                try:
                    u.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    u.kill()
                    u.wait()
    return {"n": n, "time": total, "per_copy": lat}


def pyckpt_cli_copies(t: Target, cli: list[str], env: dict[str, str], imgdir: Path, n: int) -> dict:
    """n copies by the `pyckpt restore --new-pidns` command, one after the other; each copy's
    namespace init is left to this script (the subreaper) when the command exits."""
    pids: list[int] = []
    lat: list[float] = []
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            dt, out = run_timed(cli + ["--no-progress", "restore", "--allow-changed-files", "--new-pidns",
                                       str(imgdir)], env)
            end = time.perf_counter()
            lat.append(dt)
            pid = int(out.split()[0])
            init = _parent_of(pid)
            if init is None or _parent_of(init) != os.getpid():
                raise RuntimeError(f"copy {pid}: its namespace's init {init} is not this script's child")
            _owned.add(init)
            _copies[pid] = init
            pids.append(pid)
        total = end - t0
        if not t.checksums_ok(pids, inner=t.pid):
            raise RuntimeError("a copy restored by pyckpt restore --new-pidns has different memory or PIDs")
    finally:
        for pid in pids:
            end_copy(pid)
    return {"n": n, "time": total, "per_copy": lat}


def criu_size(exe: Path, criu: str, mib: int, reps: int, workdir: Path, warmup: bool = True,
              copies: int = 0, log=print) -> dict:
    """pyckpt (command and API) and CRIU on one MIB-MiB target, in alternating order.

    dump: the target left running (`pyckpt dump`, `pyckpt.dump()`, `criu dump
    --leave-running`); restore: the target killed and reaped first, then `pyckpt
    restore`, `restore()`, `criu restore -d`, each restored process checked, killed and
    reaped before the next; `copies` copies of one image at once (pyckpt: --new-pidns /
    new_pidns=True; CRIU: each under `unshare --pid --fork --mount-proc`, see criu_copies),
    if they fit in RAM; dump + kill: a fresh target per run, `pyckpt dump --kill`,
    `dump(kill=True)` (both sync the image before the kill) and `criu dump` (kills by
    default, syncs nothing).
    """
    cli = pyckpt_command()
    env = cli_env(workdir)
    dirs = {w: workdir / f"cmp-{mib}-{w}" for w in CONTESTANTS}

    def fresh(d: Path) -> Path:
        if d.exists():
            shutil.rmtree(d)
        return d

    def dump(t: Target, what: str, kill: bool = False) -> float:
        d = fresh(dirs[what])
        if what == "cli":
            argv = cli + ["--no-progress", "dump", str(t.pid), str(d)] + (["--kill"] if kill else [])
            if not kill:
                return run_timed(argv, env)[0]
            # `dump --kill` waits (up to 2 s) for the parent to reap the killed target, so that
            # its PID is free when it returns: reap it as soon as it dies, as a shell would.
            # (Not for the API: there this process is the tracer, and a second waitpid()
            # on the target would take its ptrace stops.)
            reaper = threading.Thread(target=t.popen.wait, daemon=True)
            reaper.start()
            try:
                return run_timed(argv, env)[0]
            finally:
                reaper.join(10)
        if what == "api":
            t0 = time.perf_counter()
            pyckpt.dump(t.pid, d, kill=kill, progress=Progress(enabled=False))
            return time.perf_counter() - t0
        d.mkdir()  # the target has no terminal: no --shell-job
        return run_timed([criu, "dump", "-t", str(t.pid), "-D", str(d)]
                         + ([] if kill else ["--leave-running"]))[0]

    def restore(t: Target, what: str) -> float:
        if what == "api":
            return do_restore(t, dirs["api"])["time"]
        if what == "cli":
            dt, out = run_timed(cli + ["--no-progress", "restore", "--allow-changed-files",
                                       str(dirs["cli"])], env)
            pid = int(out.split()[0])
        else:
            dt, _ = run_timed([criu, "restore", "-D", str(dirs["criu"]), "-d"])
            pid = t.pid
        check_restored(t, pid)
        return dt

    res: dict = {"size_mib": mib}
    log(f"[criu {mib} MiB] starting target")
    t = Target(exe, mib, workdir, 1)
    set_subreaper(True)
    try:
        for w in (CONTESTANTS if warmup else ("cli",)):  # the command's bytecode cache at least
            dump(t, w)
        dumps: dict[str, list[float]] = {w: [] for w in CONTESTANTS}
        for i in range(reps):
            for w in (CONTESTANTS if i % 2 == 0 else CONTESTANTS[::-1]):
                dumps[w].append(dump(t, w))
            log(f"[criu {mib} MiB] dump {i + 1}/{reps}: " +
                ", ".join(f"{w} {dumps[w][-1] * 1e3:.1f} ms" for w in CONTESTANTS))
        if not t.checksum_ok():
            raise RuntimeError("target memory changed across dumps")
        res["image_bytes"] = {w: dir_bytes(dirs[w]) for w in CONTESTANTS}
        t.kill()
        for w in (CONTESTANTS if warmup else ("cli",)):
            restore(t, w)
        restores: dict[str, list[float]] = {w: [] for w in CONTESTANTS}
        for i in range(reps):
            for w in (CONTESTANTS if i % 2 == 0 else CONTESTANTS[::-1]):
                restores[w].append(restore(t, w))
            log(f"[criu {mib} MiB] restore {i + 1}/{reps}: " +
                ", ".join(f"{w} {restores[w][-1] * 1e3:.1f} ms" for w in CONTESTANTS))
        copy_runs: dict[str, list[dict]] = {w: [] for w in CONTESTANTS}
        note = ram_note(copies, t.len) if copies else None
        if note:
            res["copies_skipped"] = note
            log(f"[criu {mib} MiB] note: {note}")
        for i in range(reps if copies and not note else 0):
            for w in (CONTESTANTS if i % 2 == 0 else CONTESTANTS[::-1]):
                if w == "api":
                    copy_runs[w].append(restore_copies(t, dirs["api"], copies))
                elif w == "cli":
                    copy_runs[w].append(pyckpt_cli_copies(t, cli, env, dirs["cli"], copies))
                else:
                    copy_runs[w].append(criu_copies(t, criu, dirs["criu"], copies, workdir))
            log(f"[criu {mib} MiB] {copies} copies {i + 1}/{reps}: " +
                ", ".join(f"{w} {copy_runs[w][-1]['time'] * 1e3:.1f} ms" for w in CONTESTANTS))
        kills: dict[str, list[float]] = {w: [] for w in CONTESTANTS}
        last: dict[str, Target] = {}
        for i in range(-1 if warmup else 0, reps):
            for w in (CONTESTANTS if i % 2 == 0 else CONTESTANTS[::-1]):
                tk = last[w] = Target(exe, mib, workdir, 1)
                try:
                    dt = dump(tk, w, kill=True)
                finally:
                    tk.kill()  # reaps it (the dump killed it)
                if i >= 0:
                    kills[w].append(dt)
            if i >= 0:
                log(f"[criu {mib} MiB] dump+kill {i + 1}/{reps}: " +
                    ", ".join(f"{w} {kills[w][-1] * 1e3:.1f} ms" for w in CONTESTANTS))
        for w in CONTESTANTS:  # the last images of killed targets restore too (checked, untimed)
            restore(last[w], w)
    finally:
        t.kill()
        set_subreaper(False)
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
    series = [("dump", dumps), ("restore", restores), ("dump_kill", kills)]
    if copy_runs["criu"]:
        res["copies_n"] = copies
        res["copies_runs"] = copy_runs
        series.append(("copies", {w: [r["time"] for r in v] for w, v in copy_runs.items()}))
        series.append(("copies_per_copy", {w: [x for r in v for x in r["per_copy"]]
                                           for w, v in copy_runs.items()}))
    for key, runs in series:
        res[key] = {w: summary(v) for w, v in runs.items()}
        crit = statistics.median(runs["criu"])
        res[key]["ratio"] = {w: crit / statistics.median(v) for w, v in runs.items() if w != "criu"}
    return res


def fmt_criu(cmp: list[dict], version: str) -> str:
    """The side-by-side table: ms, median [best]; ratio = CRIU median / pyckpt median."""
    def cell(s):
        return f"{s['median'] * 1e3:,.1f} [{s['best'] * 1e3:,.1f}]"

    names = {"cli": "pyckpt command", "api": "pyckpt API, in-process", "criu": f"CRIU {version} command"}
    rows: list[tuple[str, list[str]]] = []
    for key, title in (("dump", "dump, target left running (ms)"),
                       ("restore", "restore, until the process runs (ms)"),
                       ("dump_kill", "dump, then kill (ms)"),
                       ("copies", "N copies of one image, all running (ms)"),
                       ("copies_per_copy", "the same copies: each one's restore (ms)")):
        if not any(key in r for r in cmp):
            continue
        if key.startswith("copies"):
            ns = sorted({r["copies_n"] for r in cmp if "copies_n" in r})
            title = title.replace("N copies", f"{'/'.join(map(str, ns))} copies")
        rows.append((title, [""] * len(cmp)))
        for w in CONTESTANTS:
            rows.append((f"  {names[w]}", [cell(r[key][w]) if key in r else r.get("copies_skipped", "-")[:20]
                                           for r in cmp]))
        for w in ("cli", "api"):
            rows.append((f"  CRIU / {names[w]}", [f"{r[key]['ratio'][w]:.2f}x" if key in r else "-"
                                                  for r in cmp]))
    rows.append(("image size, pyckpt / CRIU (MiB)",
                 [f"{r['image_bytes']['api'] / MiB:,.1f} / {r['image_bytes']['criu'] / MiB:,.1f}" for r in cmp]))
    head = ["pyckpt beside CRIU: median [best]"] + [f"{r['size_mib']} MiB" for r in cmp]
    w0 = max(len(head[0]), *(len(l) for l, _ in rows))
    ws = [max(len(head[i + 1]), *(len(c[i]) for _, c in rows)) for i in range(len(cmp))]
    lines = [head[0].ljust(w0) + "".join("  " + h.rjust(w) for h, w in zip(head[1:], ws))]
    lines.append("-" * len(lines[0]))
    for label, cells in rows:
        lines.append(label.ljust(w0) + "".join("  " + c.rjust(w) for c, w in zip(cells, ws)))
    lines += [
        "ratio above 1: pyckpt faster. Commands are timed whole (start-up included); the API "
        "without imports.",
        "Durability: pyckpt dump --kill / dump(kill=True) sync the image before the kill; CRIU "
        "dump kills without syncing anything (the image may still be only in the page cache).",
        "Copies: pyckpt restore --new-pidns / new_pidns=True against unshare --pid --fork "
        "--mount-proc criu restore --pidfile F, each copy in a new PID namespace with the "
        "image's PID; a CRIU copy counts once F is written (memory and files restored, a few "
        "resume steps left).",
    ]
    lines += [f"note: {r['copies_skipped']}" for r in cmp if "copies_skipped" in r]
    return "\n".join(lines)


def build_target(workdir: Path) -> Path:
    exe = workdir / "target"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(HERE / "target.c")], check=True)
    return exe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64,1024", help="comma-separated MiB sizes (default 64,1024)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per measurement (default 3)")
    ap.add_argument("--json", help="write all results and samples to this file")
    ap.add_argument("--floor-buf", type=int, default=4, help="dump floor buffer in MiB (default 4)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed dump/floor and restore/floor round before timing")
    ap.add_argument("--no-profile", action="store_true",
                    help="skip the extra dump and restore with pyckpt's page I/O and hashing timed")
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="parent of the work dir (default /tmp)")
    ap.add_argument("--copies", default="1,8",
                    help="comma-separated numbers of copies of one image restored at once (default 1,8; "
                         "empty: skip)")
    ap.add_argument("--criu", metavar="PATH",
                    help="also time CRIU (the criu binary at PATH) beside pyckpt's command and API, "
                         "alternating, every restored process checked; skipped without it")
    ap.add_argument("--criu-sizes", metavar="MIBS",
                    help="target sizes in MiB for the CRIU comparison (default: 4 and --sizes)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    criu_sizes: list[int] = []
    criu_ver = None
    if args.criu:
        criu_sizes = ([int(s) for s in args.criu_sizes.split(",") if s] if args.criu_sizes is not None
                      else sorted({4, *sizes}))
        try:
            criu_ver = criu_version(args.criu)
        except (OSError, RuntimeError) as e:
            ap.error(f"--criu {args.criu}: not a working criu binary ({e})")
    if not sizes and not criu_sizes:
        ap.error("nothing to measure: --sizes is empty and there is no --criu")
    copies = tuple(int(s) for s in args.copies.split(",") if s)
    if any(n < 1 or n > 256 for n in copies):
        ap.error("--copies: each N must be 1..256 (the target forks at most 256 children)")
    if os.geteuid() != 0:
        print("warning: restore with the dumped PID needs root (clone3 set_tid)", file=sys.stderr)

    # an image and a floor file at once; for CRIU, three images (pyckpt's two and CRIU's)
    need = max([2 * s for s in sizes] + [3 * s for s in criu_sizes]) * MiB + 256 * MiB
    free = shutil.disk_usage(args.tmp).free
    if free < need:
        print(f"not enough space in {args.tmp}: {free / MiB:.0f} MiB free, need {need / MiB:.0f}",
              file=sys.stderr)
        return 1

    load_start = os.getloadavg()  # other work on the machine: the numbers are only as steady as it
    workdir = Path(tempfile.mkdtemp(prefix="pyckpt-bench-", dir=args.tmp))
    results = []
    try:
        exe = build_target(workdir)
        for mib in sizes:
            results.append(bench_size(exe, mib, args.repeat, workdir, args.floor_buf * MiB,
                                      warmup=not args.no_warmup, profile=not args.no_profile,
                                      copies=copies,
                                      log=lambda s: print(s, file=sys.stderr, flush=True)))
        criu_results = [criu_size(exe, args.criu, mib, args.repeat, workdir, warmup=not args.no_warmup,
                                  copies=max(copies, default=0),
                                  log=lambda s: print(s, file=sys.stderr, flush=True))
                        for mib in criu_sizes]
    finally:
        for pid in list(_copies):
            end_copy(pid)
        for pid in list(_owned):
            kill_own(pid)
        shutil.rmtree(workdir, ignore_errors=True)

    meta = {
        "pyckpt": pyckpt.__version__, "kernel": platform.release(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "repeat": args.repeat,
        "thp": Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
        if Path("/sys/kernel/mm/transparent_hugepage/enabled").exists() else None,
        "tmp": args.tmp, "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
    }
    print(f"pyckpt {meta['pyckpt']}, Linux {meta['kernel']} {meta['machine']}, {meta['cpus']} CPUs, "
          f"repeat {args.repeat}; cells: median [best of {args.repeat}]; load average "
          f"{' '.join(f'{x:.2f}' for x in load_start)} at the start, "
          f"{' '.join(f'{x:.2f}' for x in meta['loadavg_end'])} at the end")
    if results:
        print(fmt_table(results))
    out = {"meta": meta, "results": results}
    if args.criu:
        out["criu"] = {"path": args.criu, "version": criu_ver, "results": criu_results}
        print()
        print(fmt_criu(criu_results, criu_ver))
    else:
        print("\nCRIU: not measured (no --criu PATH)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
