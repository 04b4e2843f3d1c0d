"""Dump orchestration: check -> seize -> inject -> each kind -> image.

The target is stopped only between seize and detach.  Whatever happens —
an unsupported fd, a full disk, Ctrl-C — the injector cures the task and
the seize block detaches it, so a failed dump leaves the target running as
before and the image directory holding only the INCOMPLETE marker with the
reason (the partial records and pages are removed).  What /proc can tell
before anything is touched (no such process, an unsuitable one, pyckpt's
own tree, a lease) is refused before the directory is made.  With
`kill=True` the target is killed only after the image is complete on disk,
and dump returns once the killed processes' PIDs are free again (or after
~2 s, naming the parent that has not reaped one: `DumpStats.unreaped`).
Once the image is committed (complete, past the last checkpoint) nothing
removes it: an error after that — the kill failing half-way, say — is
`DumpStats.late_error`, and dump returns the image all the same.
"""

from __future__ import annotations

import contextlib
import os
import time

from ._dataclass import dataclass, field

from . import __version__, privileges, proc
from .errors import (DumpError, NoSuchProcessError, PyckptError, UnsuitableProcessError, UnsupportedError,
                     boundary)
from .image import FORMAT_VERSION, Header, ImageWriter
from .inject import Injector, injection_site_from
from .kinds import (before_freeze, before_kill, cpu, creds, files, itimers, load_for_dump, memory, mm, signals,
                    task, thread)
from .kinds.context import DumpContext, DumpOptions, dump_hooks
from .kinds.task import ProcessRecord, ZombieRecord
from .progress import Progress
from .seize import Seized, check_dumpable, pinned_to_cpu, refusal, unpinned_cpus
from .signals import checkpoint, commit, deferred_signals

# The core kinds in the order their records are written; each returns its records.
# Other kinds register theirs with kinds.context.dump_hook (called after these).
DUMP_KINDS = (task.dump, creds.dump, mm.dump, thread.dump, signals.dump, itimers.dump, files.dump, memory.dump,
              cpu.dump)


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
    # kill=True: killed processes whose zombie their parent had not reaped when dump
    # returned, {pid: that parent's pid}; their PIDs are not free for a restore yet.
    # Empty when every PID of the image is free.  pyckpt's own children are never
    # waited for (the caller reaps them): they are listed at once, with os.getpid().
    unreaped: dict[int, int] = field(default_factory=dict)
    # What failed after the image was committed (complete on disk), in words; the image
    # stands all the same (with kill=True it may be the only copy) and is never removed
    # for it.  "" when nothing did.
    late_error: str = ""


def dump(pid: int, path, *, kill: bool = False, progress: Progress | None = None,
         options: DumpOptions | None = None):
    """Write an image of process `pid` into directory `path` (see pyckpt.dump)."""
    from . import Image

    # smaps, slow to produce, read in a thread meanwhile (checked inside the freeze:
    # _collect); after a pre-copy pass (seconds, maybe), not before it
    started = type(pid) is int and pid > 0 and not (options and options.precopy)
    smaps = proc.SmapsFlags(pid) if started else None
    links = load_for_dump(pid)  # (the kinds of its fds now; one of another type loads its own)
    progress = progress or Progress()
    options = options or DumpOptions()
    stats = DumpStats()
    t0 = time.perf_counter()
    with boundary(f"dump of process {pid}", DumpError, "it was left running"), deferred_signals() as deferral:
        privileges.require("dump", pid=pid)  # before anything is frozen or written
        stat = refuse_early(pid, links)
        if kill:  # a session leader on a terminal outside the image could not come back (kinds/tty.py)
            from .kinds.tty import refuse_kill

            refuse_kill(pid)
        if options.parent is not None:  # opened (and checked) before anything is touched
            options.parent_pages = memory.ParentPages(options.parent)
        writer = ImageWriter(path)
        writer.pages.writeback = kill  # pages.img is synced before the kill: write it back meanwhile
        pre = None
        members: list[int] = []  # the tree's processes (and zombies) frozen so far
        running: list[int] = []  # kill=True, a late error: members it left alive
        try:
            try:
                before_freeze(pid)
                if options.precopy:
                    from .precopy import PreCopy  # (a pre-copy's alone: not in every dump's start-up)

                    t = time.perf_counter()
                    pre = PreCopy(pid, writer.pages, progress, options.parent_pages)
                    members.append(pid)  # pre-copy works on the running target
                    pre.start()
                    pre.copy_pass()
                    stats.phases["pre-copy (running)"] = time.perf_counter() - t
                _dump_frozen(pid, stat, writer, kill, progress, stats, options, pre, members, deferral, smaps)
                if pre is not None:
                    stats.precopy_reused, stats.precopy_off = pre.reused, pre.off
            finally:
                if pre is not None:
                    pre.finish()
                if options.parent_pages is not None:
                    options.parent_pages.close()  # (its pages.img fds: PageCopier read the parent)
        except BaseException as e:
            if deferral.complete:
                # Committed: the image stands.  With kill=True it may be the only copy of
                # processes killed already; nothing after commit() may remove it.
                if not isinstance(e, Exception):
                    raise
                running = _still_running(members) if kill else []
                stats.late_error = _late_error(e, kill, running)
            else:
                # Nothing frozen yet (the target vanished or became unsuitable since the
                # checks): no marker either, as for the refusals found before.
                writer.abandon(_reason(e), keep_marker=bool(members))
                raise  # typed at the boundary
        if kill:
            t = time.perf_counter()
            # A signal now (after commit(): the image stands) only ends the wait.
            stats.unreaped = _wait_until_reaped([m for m in members if m not in running],
                                                stop=lambda: bool(deferral.pending))
            stats.phases["wait for the reaper"] = time.perf_counter() - t
    stats.total = time.perf_counter() - t0
    image = Image._written(path, writer.header)  # read back only when asked
    image.dump_stats = stats
    return image


def _reason(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return str(e) or type(e).__name__


def _still_running(pids: list[int]) -> list[int]:
    """Those of `pids` that are alive (neither gone nor a zombie), from /proc."""
    alive = []
    for pid in pids:
        try:
            if proc.read_stat(pid).state not in ("Z", "X"):
                alive.append(pid)
        except OSError:
            pass
    return alive


def _late_error(e: Exception, kill: bool, running: list[int]) -> str:
    """DumpStats.late_error: what failed after the image was committed, and with
    kill=True which processes it left alive."""
    what = str(e) if isinstance(e, PyckptError) else f"{type(e).__name__}: {e}"
    if not kill:
        return f"after the image was complete: {what}"
    if running:
        alive = ", ".join(map(str, running))
        return (f"after the image was complete, before every process was killed: {what}; "
                f"process{'es' if len(running) > 1 else ''} {alive} still run{'' if len(running) > 1 else 's'}"
                " (kill it, or restore with --new-pidns, before the image is restored)")
    return f"after the image was complete and its processes killed: {what}"


def refuse_early(pid: int, links: dict[int, str] | None = None) -> proc.ProcStat:
    """Every refusal /proc tells before any process is touched and the image directory
    made: the root (check_dumpable), pyckpt's own tree, the root's descendants as they
    are now, and leases.  The freeze checks again whatever changed meanwhile."""
    stat = check_dumpable(pid)
    me, seen = os.getpid(), set()
    # Every ancestor of pyckpt started before it: a process started later is none (the
    # walk up its parents is a /proc read each).
    ancestor = os.getppid() if stat.start_time <= _own_start_time() else 0
    while ancestor > 0 and ancestor not in seen:
        if ancestor == pid:
            raise UnsuitableProcessError(
                f"process {pid} ({stat.comm}) is an ancestor of pyckpt (process {me}): its tree "
                "holds pyckpt itself, which cannot dump itself; run pyckpt from outside that tree",
                pid=pid)
        seen.add(ancestor)
        try:
            ancestor = proc.read_stat(ancestor).ppid
        except OSError:
            break
    tree, todo = [pid], _children(pid)
    while todo:
        child = todo.pop(0)
        try:
            cstat, cstatus = proc.read_stat(child), proc.read_status(child)
        except OSError:
            continue  # gone already
        if cstat.state in ("Z", "X") or child in tree:
            continue
        error = refusal(cstat, cstatus, me)
        if error is not None:
            raise error
        tree.append(child)
        todo += _children(child)
    _refuse_leases(tree, {pid: links} if links is not None else {})
    return stat


_OWN_START: dict[int, int] = {}


def _own_start_time() -> int:
    """pyckpt's own start time (clock ticks after boot, /proc/PID/stat), read once."""
    me = os.getpid()
    if me not in _OWN_START:
        _OWN_START[me] = proc.read_stat(me).start_time
    return _OWN_START[me]


def _refuse_leases(pids: list[int], links: dict[int, dict[int, str]]) -> None:
    """A lease (F_SETLEASE) cannot be saved: refuse it now, from /proc.  Each fd's
    fdinfo shows the locks and leases on its file; /proc/locks shows them all at
    once but costs an RCU grace period to read (~10 ms here), so it is read only
    for a tree with very many fds."""
    fds = []
    for pid in pids:
        if pid in links:  # (read just before: load_for_dump)
            fds += [(pid, fd) for fd in links[pid]]
            continue
        try:
            fds += [(pid, int(n)) for n in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
    if len(fds) > LEASE_SCAN_FDS:
        _refuse_leases_from_proc_locks(fds)
        return
    from .proc.locks import read_fdinfo_locks

    for pid, fd in fds:
        try:
            # Only a regular file takes a lease: not a socket, pipe or anonymous inode
            # (most of a server's fds), whose link is no path; one readlink, not an fdinfo read
            link = links.get(pid, {}).get(fd)
            if not (link if link is not None else os.readlink(f"/proc/{pid}/fd/{fd}")).startswith("/"):
                continue
        except FileNotFoundError:
            continue  # closed meanwhile
        except OSError:
            pass  # (a path too long to read back, say: its fdinfo tells)
        try:
            leased = any(line.kind in ("LEASE", "DELEG") for line in read_fdinfo_locks(pid, fd))
        except OSError:
            continue  # closed meanwhile
        if leased:
            from .kinds.locks import _locks_of_description  # raises the dump's own refusal of a lease

            _locks_of_description(pid, fd, 0)


LEASE_SCAN_FDS = 1024  # above this many fds, one read of /proc/locks is the cheaper way


def _refuse_leases_from_proc_locks(fds: list[tuple[int, int]]) -> None:
    from .proc.locks import read_locks

    try:
        lines = read_locks(strict=False)
    except OSError:
        return
    # (not the "->" lines: waiters hold nothing); -1: a lease without an inode
    leased = {line.ino if line.dev is not None else -1 for line in lines
              if line.kind in ("LEASE", "DELEG") and not line.waiter}
    if not leased:
        return
    from .kinds.locks import _locks_of_description  # raises the dump's own refusal of a lease

    for pid, fd in fds:
        try:
            if os.stat(f"/proc/{pid}/fd/{fd}").st_ino in leased or -1 in leased:
                _locks_of_description(pid, fd, 0)
        except OSError:
            continue  # closed meanwhile


def _wait_until_reaped(pids: list[int], timeout: float = 2.0, stop=lambda: False) -> dict[int, int]:
    """After kill=True: wait until the parents of the killed `pids` have reaped them,
    so that their PIDs are free for a restore, for at most `timeout` seconds.
    {pid: parent} for those still unreaped; pyckpt's own children (its caller
    reaps them) are not waited for, nor anything once `stop()` is true.  Nothing is
    signalled or reaped here."""
    me = os.getpid()
    born: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        left: dict[int, int] = {}
        for pid in pids:
            try:
                st = proc.read_stat(pid)
            except (OSError, IndexError, ValueError):
                continue  # reaped: the PID is free
            if born.setdefault(pid, st.start_time) != st.start_time:
                continue  # reaped, and the PID taken by another process since
            left[pid] = st.ppid
        if all(parent == me for parent in left.values()) or time.monotonic() >= deadline or stop():
            return left
        time.sleep(delay)
        delay = min(2 * delay, 0.02)


def _commit(deferral) -> None:
    """The image stands from here on.  A signal until now raises (the dump is undone);
    `deferral.complete` is set in any thread (signals are deferred in the main thread
    only), and once it is, no error removes the image (see dump)."""
    commit()
    deferral.complete = True


def _dump_frozen(pid, stat, writer: ImageWriter, kill, progress, stats: DumpStats,
                 options: DumpOptions, pre, members: list[int], deferral, smaps: proc.SmapsFlags | None) -> None:
    if smaps is None:
        smaps = proc.SmapsFlags(pid)
    identities = memory.identities_before(pid)  # (while the smaps read goes on)
    smaps.wait()
    with pinned_to_cpu(stat.processor), _gc_paused():
        t_seize = time.perf_counter()
        with contextlib.ExitStack() as frozen:
            try:
                seized, zombies = _seize_tree(pid, frozen, [] if members is None else members)
                tree = list(seized)
                shared: dict = {}  # objref across the processes of the tree
                tables = proc.Tables()  # /proc tables read once for this dump
                records: list = []
                for member in tree:
                    records.append(ProcessRecord(member, proc.read_stat(member).ppid))
                    records += _collect(member, seized[member].tids, writer, progress, stats,
                                        smaps if member == pid else None, options, tree, shared, pre,
                                        tables, identities if member == pid else None)
                for zombie, (ppid, status) in zombies.items():
                    records += [ProcessRecord(zombie, ppid), ZombieRecord(zombie, ppid, status)]
                if kill:
                    _write_records(writer, records, pid, stat, stats)
                    # The image is the only copy of the processes from now on.
                    t = time.perf_counter()
                    writer.finish(sync=True)
                    stats.phases["finish"] = time.perf_counter() - t
                    _commit(deferral)  # a signal until now: abandon() demotes the image, the tree is detached
                    before_kill(shared)
                    for s in seized.values():
                        s.kill_on_exit = True
            finally:
                stats.freeze = time.perf_counter() - t_seize
    if not kill:
        _write_records(writer, records, pid, stat, stats)  # the tree runs again meanwhile
        t = time.perf_counter()
        writer.finish(sync=False)
        _commit(deferral)  # a signal until now: abandon() demotes the image
        stats.phases["finish"] = time.perf_counter() - t


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection while the tree is frozen: a full collection of the
    process pyckpt runs in (a Jupyter server's, whose extension dumps in a thread)
    would stop every thread, the dumping one too, for as long as it walks its objects."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _write_records(writer: ImageWriter, records: list, pid: int, stat, stats: DumpStats) -> None:
    t = time.perf_counter()
    writer.write_header(Header(
        format_version=FORMAT_VERSION, pyckpt_version=__version__,
        kernel_release=os.uname().release, machine=os.uname().machine,
        created=time.time(), root_pid=pid, comm=stat.comm,
    ))
    for rec in records:
        writer.write_record(rec)
    stats.phases["write records"] = time.perf_counter() - t


def _children(pid: int) -> list[int]:
    """Child processes of every thread of `pid` (zombies included), from /proc."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out += proc.read_children(pid, int(tid))
        except OSError:
            pass
    return sorted(set(out))


def _seize_tree(root: int, frozen: contextlib.ExitStack,
                members: list[int]) -> tuple[dict[int, Seized], dict]:
    """Freeze the root and all its descendants, parents first; the member list is
    re-read until no frozen member has a child that is not frozen (a process
    that forked meanwhile is caught; once all are frozen none can fork).
    Zombies cannot be frozen and need not be: {pid: (ppid, wait status)}.
    `members` gets every process frozen and every zombie found, as they are."""
    seized: dict[int, Seized] = {root: frozen.enter_context(Seized(root))}
    zombies: dict[int, tuple[int, int]] = {}

    def add(pid: int) -> None:
        if pid not in members:
            members.append(pid)

    add(root)
    for _ in range(100):
        new = [c for p in list(seized) for c in _children(p) if c not in seized and c not in zombies]
        if not new:
            for zombie in zombies:
                add(zombie)
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
                add(child)
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


def _refuse_thread_seccomp(pid: int, tids: list[int]) -> None:
    """A thread's own seccomp filter (one installed without TSYNC; the leader's status
    shows only the leader's, which seize.refusal checked) could kill the process at a
    call injected into that thread (inject.spread, kinds/thread.py): refused before any."""
    from .proc._read import read_bytes

    for tid in tids:
        if tid == pid:
            continue
        try:
            text = read_bytes(f"/proc/{pid}/task/{tid}/status")
        except OSError:
            continue  # (exited meanwhile: the injector says so)
        at = text.find(b"\nSeccomp:")
        if at >= 0 and text[at + 9:text.index(b"\n", at + 1)].strip() != b"0":
            raise UnsupportedError(
                f"thread {tid} of process {pid} runs under a seccomp filter of its own, which "
                "pyckpt cannot save yet (restoring it without its filter would widen what it may "
                "do)", pid=pid)


def _collect(pid: int, tids: list[int], writer: ImageWriter, progress: Progress, stats: DumpStats,
             smaps: proc.SmapsFlags | None, options: DumpOptions, tree: list[int],
             shared: dict, pre=None, tables=None, identities: dict | None = None) -> list:
    t = time.perf_counter()
    status = proc.read_status(pid)
    stat = proc.read_stat(pid)
    _refuse_thread_seccomp(pid, tids)
    maps = proc.read_maps(pid)
    # smaps, slow to produce, is read in a thread (the root's from the dump's start) and
    # waited for by the memory phase: read again then if the VMAs are not these
    smaps_flags = smaps or proc.SmapsFlags(pid, unpinned_cpus())
    smaps_flags.expect(maps)
    vdso = [m for m in maps if m.path == "[vdso]"]
    if not vdso:
        raise UnsupportedError(f"process {pid} has no [vdso]; cannot run code inside it", pid=pid)
    site = injection_site_from(pid, vdso[0].start, vdso[0].size)
    stats.phases["read /proc"] = stats.phases.get("read /proc", 0) + time.perf_counter() - t
    records: list = []
    with contextlib.ExitStack() as injectors:
        # One injector per thread, the leader's first (so it is cured last,
        # unmapping the scratch page, if one had to be mapped, when every thread
        # is done with it; else it is stack below the leader's frame).
        threads = {tid: injectors.enter_context(Injector(tid, site, held=True, maps=maps)) for tid in tids}
        inj = threads[pid]
        scratch = inj.scratch_page()
        for other in threads.values():
            if other is not inj:
                other.share(inj)
        ctx = DumpContext(pid, stat, status, maps, smaps_flags, inj, scratch, writer.pages, progress,
                          options, threads, tree=tree, objects=shared, precopy=pre,
                          tables=tables or proc.Tables(), identities=identities or {})
        for kind_dump in (*DUMP_KINDS, *(h.run for h in dump_hooks())):
            checkpoint()
            t = time.perf_counter()
            records += kind_dump(ctx)
            name = kind_dump.__module__.rsplit(".", 1)[-1]
            stats.phases[name] = stats.phases.get(name, 0) + time.perf_counter() - t
        stats.injected_calls += sum(i.calls for i in threads.values())
    stats.pages_bytes = writer.pages.offset
    return records
