"""Dump orchestration: check -> seize -> inject -> each kind -> image.

The target is stopped only between seize and detach.  Whatever happens —
an unsupported fd, a full disk, Ctrl-C — the injector cures the task and
the seize block detaches it, so a failed dump leaves the target running as
before and the image directory marked INCOMPLETE with the reason.  With
`kill=True` the target is killed only after the image is complete on disk.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass, field

from . import __version__, proc
from .errors import DumpError, NoSuchProcessError, UnsupportedError
from .image import FORMAT_VERSION, Header, ImageWriter
from .inject import Injector, injection_site_from
from .kinds import before_kill, cpu, creds, files, itimers, load_all, memory, mm, signals, task, thread
from .kinds.context import DumpContext, DumpOptions
from .kinds.task import ProcessRecord, ZombieRecord
from .precopy import PreCopy
from .progress import Progress
from .seize import Seized, check_dumpable, pinned_to_cpu, refusal
from .signals import checkpoint, commit, deferred_signals

# Kinds in the order their records are written; each returns its records.
DUMP_KINDS = (task.dump, creds.dump, mm.dump, thread.dump, signals.dump, itimers.dump, files.dump, memory.dump, cpu.dump)


@dataclass
class DumpStats:
    """Where the time of one dump went (seconds) and how much was stored."""

    freeze: float = 0.0  # target stopped: seize to detach (or kill)
    total: float = 0.0
    pages_bytes: int = 0
    precopy_reused: int = 0  # bytes copied while the target ran and kept (pre-copy)
    precopy_off: str = ""  # why pre-copy kept nothing, when it could not track writes
    injected_calls: int = 0
    phases: dict[str, float] = field(default_factory=dict)


def dump(pid: int, path, *, kill: bool = False, progress: Progress | None = None,
         options: DumpOptions | None = None):
    """Write an image of process `pid` into directory `path` (see pyckpt.dump)."""
    from . import Image

    load_all()
    progress = progress or Progress()
    options = options or DumpOptions()
    stats = DumpStats()
    t0 = time.perf_counter()
    with deferred_signals():
        stat = check_dumpable(pid)
        writer = ImageWriter(path)
        pre = None
        try:
            if options.precopy:
                t = time.perf_counter()
                pre = PreCopy(pid, writer.pages, progress)
                pre.start()
                pre.copy_pass()
                stats.phases["pre-copy (running)"] = time.perf_counter() - t
            _dump_frozen(pid, stat, writer, kill, progress, stats, options, pre)
            if pre is not None:
                stats.precopy_reused, stats.precopy_off = pre.reused, pre.off
        except BaseException as e:
            writer.abandon(_reason(e))
            if isinstance(e, OSError):
                raise DumpError(f"dump of process {pid} failed: {e}; it was left running") from e
            raise
        finally:
            if pre is not None:
                pre.finish()
    stats.total = time.perf_counter() - t0
    image = Image(path)
    image.dump_stats = stats
    return image


def _reason(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return str(e) or type(e).__name__


def _dump_frozen(pid, stat, writer: ImageWriter, kill, progress, stats: DumpStats,
                 options: DumpOptions, pre=None) -> None:
    # smaps is slow to produce for a large process: read it before the freeze
    # and again inside only if the list of VMAs changed meanwhile.
    smaps_flags = proc.read_smaps_flags(pid)
    with pinned_to_cpu(stat.processor):
        t_seize = time.perf_counter()
        with contextlib.ExitStack() as frozen:
            try:
                seized, zombies = _seize_tree(pid, frozen)
                tree = list(seized)
                shared: dict = {}  # objref across the processes of the tree
                records: list = []
                for member in tree:
                    records.append(ProcessRecord(member, proc.read_stat(member).ppid))
                    records += _collect(member, seized[member].tids, writer, progress, stats,
                                        smaps_flags if member == pid else {}, options, tree, shared, pre)
                for zombie, (ppid, status) in zombies.items():
                    records += [ProcessRecord(zombie, ppid), ZombieRecord(zombie, ppid, status)]
                t = time.perf_counter()
                writer.write_header(Header(
                    format_version=FORMAT_VERSION, pyckpt_version=__version__,
                    kernel_release=platform.release(), machine=platform.machine(),
                    created=time.time(), root_pid=pid, comm=stat.comm,
                ))
                for rec in records:
                    writer.write_record(rec)
                stats.phases["write records"] = time.perf_counter() - t
                if kill:
                    # The image is the only copy of the processes from now on.
                    t = time.perf_counter()
                    writer.finish(sync_pages=True)
                    stats.phases["finish"] = time.perf_counter() - t
                    commit()  # a signal until now: abandon() demotes the image, the tree is detached
                    before_kill(shared)
                    for s in seized.values():
                        s.kill_on_exit = True
            finally:
                stats.freeze = time.perf_counter() - t_seize
    if not kill:
        t = time.perf_counter()
        writer.finish(sync_pages=False)
        commit()  # a signal until now: abandon() demotes the image
        stats.phases["finish"] = time.perf_counter() - t


def _children(pid: int) -> list[int]:
    """Child processes of every thread of `pid` (zombies included), from /proc."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return sorted(set(out))


def _seize_tree(root: int, frozen: contextlib.ExitStack) -> tuple[dict[int, Seized], dict]:
    """Freeze the root and all its descendants, parents first; the member list is
    re-read until no frozen member has a child that is not frozen (a process
    that forked meanwhile is caught; once all are frozen none can fork).
    Zombies cannot be frozen and need not be: {pid: (ppid, wait status)}."""
    seized: dict[int, Seized] = {root: frozen.enter_context(Seized(root))}
    zombies: dict[int, tuple[int, int]] = {}
    for _ in range(100):
        new = [c for p in list(seized) for c in _children(p) if c not in seized and c not in zombies]
        if not new:
            return seized, zombies
        for child in new:
            try:
                cstat, cstatus = proc.read_stat(child), proc.read_status(child)
            except OSError:
                continue  # gone already
            if cstat.state in ("Z", "X"):
                zombies[child] = (cstat.ppid, cstat.exit_code)
                continue
            error = refusal(cstat, cstatus, os.getpid())
            if error is not None:
                raise error
            try:
                seized[child] = frozen.enter_context(Seized(child))
            except (NoSuchProcessError, DumpError):
                # It exited meanwhile: its parent is frozen, so it is a zombie now.
                try:
                    cstat = proc.read_stat(child)
                except OSError:
                    continue
                if cstat.state not in ("Z", "X"):
                    raise
                zombies[child] = (cstat.ppid, cstat.exit_code)
    raise DumpError(f"the tree of process {root} kept forking; could not freeze it")


def _collect(pid: int, tids: list[int], writer: ImageWriter, progress: Progress, stats: DumpStats,
             smaps_flags: dict[int, list[str]], options: DumpOptions, tree: list[int],
             shared: dict, pre=None) -> list:
    t = time.perf_counter()
    status = proc.read_status(pid)
    stat = proc.read_stat(pid)
    maps = proc.read_maps(pid)
    if set(smaps_flags) != {m.start for m in maps}:  # the layout changed since it was read
        smaps_flags = proc.read_smaps_flags(pid)
    vdso = [m for m in maps if m.path == "[vdso]"]
    if not vdso:
        raise UnsupportedError(f"process {pid} has no [vdso]; cannot run code inside it", pid=pid)
    site = injection_site_from(pid, vdso[0].start, vdso[0].size)
    stats.phases["read /proc"] = stats.phases.get("read /proc", 0) + time.perf_counter() - t
    records: list = []
    with contextlib.ExitStack() as injectors:
        # One injector per thread, the leader's first (so it is cured last,
        # unmapping the scratch page when every thread is done with it).
        threads = {tid: injectors.enter_context(Injector(tid, site, held=True)) for tid in tids}
        inj = threads[pid]
        scratch = inj.map_scratch()
        ctx = DumpContext(pid, stat, status, maps, smaps_flags, inj, scratch, writer.pages, progress,
                          options, threads, tree=tree, objects=shared, precopy=pre)
        for kind_dump in DUMP_KINDS:
            checkpoint()
            t = time.perf_counter()
            records += kind_dump(ctx)
            name = kind_dump.__module__.rsplit(".", 1)[-1]
            stats.phases[name] = stats.phases.get(name, 0) + time.perf_counter() - t
        stats.injected_calls += sum(i.calls for i in threads.values())
    stats.pages_bytes = writer.pages.offset
    return records
