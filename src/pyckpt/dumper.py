"""Dump orchestration: check -> seize -> inject -> each kind -> image.

The target is stopped only between seize and detach.  Whatever happens —
an unsupported fd, a full disk, Ctrl-C — the injector cures the task and
the seize block detaches it, so a failed dump leaves the target running as
before and the image directory marked INCOMPLETE with the reason.  With
`kill=True` the target is killed only after the image is complete on disk.
"""

from __future__ import annotations

import contextlib
import platform
import time
from dataclasses import dataclass, field

from . import __version__, proc
from .errors import DumpError, UnsupportedError
from .image import Header, ImageWriter
from .inject import Injector, injection_site_from
from .kinds import cpu, creds, files, itimers, load_all, memory, mm, signals, task, thread
from .kinds.context import DumpContext, DumpOptions
from .progress import Progress
from .seize import Seized, check_dumpable, pinned_to_cpu
from .signals import checkpoint, deferred_signals

# Kinds in the order their records are written; each returns its records.
DUMP_KINDS = (task.dump, creds.dump, mm.dump, thread.dump, signals.dump, itimers.dump, files.dump, memory.dump, cpu.dump)


@dataclass
class DumpStats:
    """Where the time of one dump went (seconds) and how much was stored."""

    freeze: float = 0.0  # target stopped: seize to detach (or kill)
    total: float = 0.0
    pages_bytes: int = 0
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
        try:
            _dump_frozen(pid, stat, writer, kill, progress, stats, options)
        except BaseException as e:
            writer.abandon(_reason(e))
            if isinstance(e, OSError):
                raise DumpError(f"dump of process {pid} failed: {e}; it was left running") from e
            raise
    stats.total = time.perf_counter() - t0
    image = Image(path)
    image.dump_stats = stats
    return image


def _reason(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return str(e) or type(e).__name__


def _dump_frozen(pid, stat, writer: ImageWriter, kill, progress, stats: DumpStats,
                 options: DumpOptions) -> None:
    # smaps is slow to produce for a large process: read it before the freeze
    # and again inside only if the list of VMAs changed meanwhile.
    smaps_flags = proc.read_smaps_flags(pid)
    with pinned_to_cpu(stat.processor):
        t_seize = time.perf_counter()
        with Seized(pid) as seized:
            try:
                records = _collect(pid, seized.tids, writer, progress, stats, smaps_flags, options)
                t = time.perf_counter()
                writer.write_header(Header(
                    format_version=1, pyckpt_version=__version__,
                    kernel_release=platform.release(), machine=platform.machine(),
                    created=time.time(), root_pid=pid, comm=stat.comm,
                ))
                for rec in records:
                    writer.write_record(rec)
                stats.phases["write records"] = time.perf_counter() - t
                if kill:
                    # The image is the only copy of the process from now on.
                    t = time.perf_counter()
                    writer.finish(sync_pages=True)
                    stats.phases["finish"] = time.perf_counter() - t
                    seized.kill_on_exit = True
            finally:
                stats.freeze = time.perf_counter() - t_seize
    if not kill:
        t = time.perf_counter()
        writer.finish(sync_pages=False)
        stats.phases["finish"] = time.perf_counter() - t


def _children(pid: int, tids: list[int]) -> list[int]:
    """Child processes of every thread of `pid` (zombies included), from /proc."""
    out: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return sorted(set(out))


def _collect(pid: int, tids: list[int], writer: ImageWriter, progress: Progress, stats: DumpStats,
             smaps_flags: dict[int, list[str]], options: DumpOptions) -> list:
    t = time.perf_counter()
    status = proc.read_status(pid)
    stat = proc.read_stat(pid)
    children = _children(pid, tids)
    if children:
        raise UnsupportedError(
            f"process {pid} has child processes ({', '.join(map(str, children[:8]))}); process trees "
            "are not supported yet — the image would lose them"
        )
    maps = proc.read_maps(pid)
    if set(smaps_flags) != {m.start for m in maps}:  # the layout changed since it was read
        smaps_flags = proc.read_smaps_flags(pid)
    vdso = [m for m in maps if m.path == "[vdso]"]
    if not vdso:
        raise UnsupportedError(f"process {pid} has no [vdso]; cannot run code inside it")
    site = injection_site_from(pid, vdso[0].start, vdso[0].size)
    stats.phases["read /proc"] = time.perf_counter() - t
    records: list = []
    with contextlib.ExitStack() as injectors:
        # One injector per thread, the leader's first (so it is cured last,
        # unmapping the scratch page when every thread is done with it).
        threads = {tid: injectors.enter_context(Injector(tid, site)) for tid in tids}
        inj = threads[pid]
        scratch = inj.map_scratch()
        ctx = DumpContext(pid, stat, status, maps, smaps_flags, inj, scratch, writer.pages, progress,
                          options, threads)
        for kind_dump in DUMP_KINDS:
            checkpoint()
            t = time.perf_counter()
            records += kind_dump(ctx)
            stats.phases[kind_dump.__module__.rsplit(".", 1)[-1]] = time.perf_counter() - t
        stats.injected_calls = sum(i.calls for i in threads.values())
    stats.pages_bytes = writer.pages.offset
    return records
