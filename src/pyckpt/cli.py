"""The `pyckpt` command: parse arguments, call the API, print results.

Errors print one line on stderr and exit with the error class's code
(see `pyckpt --help`); `--debug` (before or after the command) prints the
traceback above that line, and the exit code stays the error's.  `dump` and
`restore` note SIGINT/SIGTERM instead of dying of them (see HOLDING): until the
work is complete a signal undoes it (exit 130), after it changes nothing (exit 0).
As the program, `dump`, `restore`, `show` and `check` exit as soon as their output is
flushed, without Python's teardown (`_exit_now`; not when an atexit callback or a
thread is left).
"""

from __future__ import annotations

import os
import sys

from . import __version__
from . import errors

EXIT_CODES = [
    (errors.NoSuchProcessError, "no such process"),
    (errors.UnsuitableProcessError, "process cannot be dumped (kernel thread, zombie, traced, threads...)"),
    (errors.UnsupportedError, "process holds state pyckpt cannot save yet"),
    (errors.ImageError, "image missing, incomplete, corrupted or of another version"),
    (errors.ImageWriteError, "image directory cannot be written"),
    (errors.PidInUseError, "the PID to restore is taken"),
    (errors.FileChangedError, "a file changed since the dump"),
    (errors.KernelMismatchError, "kernel or CPU differs from the dump's"),
    (errors.RestoreError, "restore failed (nothing was left behind)"),
    (errors.DumpError, "dump failed (the target runs on)"),
    (errors.PtraceError, "a ptrace request failed"),
    (errors.LockConflictError, "a file lock of the image is held by another process"),
    (errors.ResourceError, "pyckpt ran out of fds or memory (raise ulimit -n, close fds); not the image"),
    (errors.PrivilegeError, "not run as root with the capabilities needed (nothing was done)"),
    (errors.UntrustedImageError, "an image owned by an ordinary user asks for more than that user "
                                 "has (--trust-image)"),
    (errors.InternalError, "a bug in pyckpt (run again with --debug, report the traceback)"),
    (errors.Interrupted, "interrupted by SIGINT/SIGTERM (work undone)"),
]


def _exit_codes_help() -> str:
    lines = ["exit codes:", "  0    success", "  1    other pyckpt error", "  2    bad command line"]
    lines += [f"  {cls.exit_code:<4} {what}" for cls, what in EXIT_CODES]
    lines += ["A SIGINT/SIGTERM that comes once the work is complete (a dump's image on disk, a",
              "restored process about to be released) changes nothing: exit 0, one line on stderr",
              "says so."]
    return "\n".join(lines)


def build_parser():
    """The whole command line's argparse parser (`--help`, and every command line the
    fast path below leaves to it)."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        """argparse, but a bad command line is one line on stderr too."""

        def error(self, message: str):
            self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    p = _Parser(
        prog="pyckpt",
        description="Checkpoint a running Linux process into an image directory and restore it later.",
        epilog=_exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"pyckpt {__version__}")
    _common_options(p, False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("dump", help="dump a running process into DIR",
                       description="Freeze process PID, write its state into the new or empty "
                                   "directory DIR, and let it carry on (or kill it with --kill).")
    d.add_argument("pid", type=int, metavar="PID")
    d.add_argument("dir", metavar="DIR")
    d.add_argument("--kill", action="store_true",
                   help="kill the process once the image is complete on disk")
    d.add_argument("--precopy", action="store_true",
                   help="copy memory while the process runs, then stop it only to copy what it "
                        "wrote meanwhile (shorter freeze for large processes)")
    d.add_argument("--parent", metavar="PARENT_DIR",
                   help="an earlier image of the process: store only the memory that changed "
                        "since (the 4 KiB pages of changed 256 KiB pieces); a restore reads the "
                        "rest from PARENT_DIR, which "
                        "must stay where it is")
    d.add_argument("--max-deleted-size", type=int, default=64 << 20, metavar="BYTES",
                   help="largest deleted-but-open file (or memfd) whose content is kept in "
                        "the image (default %(default)s); a larger one is refused")

    r = sub.add_parser("restore", help="restore the process saved in DIR",
                       description="Re-create the process saved in DIR with its PID. Prints the "
                                   "PID as the only line on stdout once the process runs on its own.")
    r.add_argument("dir", metavar="DIR")
    _restore_options(r)
    r.add_argument("--lazy", action="store_true",
                   help="let the process run before its memory is filled: private anonymous pages "
                        "come from the image when first touched (userfaultfd), the rest in the "
                        "background, from a handler process that exits once all are in (its PID on "
                        "stderr); if it dies first, the process is killed. Their checksums are checked "
                        "as they are served: a corrupted page kills the process before it reads it, "
                        "said later on stderr if it is a terminal or a file, and in the kernel log. "
                        "DIR may be removed meanwhile")

    s = sub.add_parser("show", help="describe an image",
                       description="Print what an image holds: header, memory areas, fds.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--json", action="store_true", help="print JSON")

    c = sub.add_parser("check", help="verify an image completely; with --restore, whether it "
                                     "can be restored here and with which options",
                       description="Read every record and every page of an image and verify "
                                   "all checksums. Exit 0 when the image is intact. With "
                                   "--restore (and restore's options), also run every check "
                                   "restore makes before it creates a process (PIDs, files, fds "
                                   "outside the image, ports, locks, kernel), creating nothing, "
                                   "and list every problem with the options that avoid it; exit "
                                   "0 only when such a restore would get past them, else with the "
                                   "exit code of the first problem.")
    c.add_argument("dir", metavar="DIR")
    c.add_argument("--restore", action="store_true",
                   help="check whether a restore with the options that follow would get past "
                        "validation here and now")
    _restore_options(c)

    for command in sub.choices.values():
        # The same options after the command (`pyckpt dump --debug PID DIR`); there they
        # default to SUPPRESS, so leaving them out does not undo one given before it.
        _common_options(command, argparse.SUPPRESS)
    # Everything after `jupyter` (options too) is pyckpt/jupyter/cli.py's to parse.
    j = sub.add_parser("jupyter", help="save or restore a kernel of a running Jupyter server "
                                       "(pyckpt jupyter --help)", add_help=False, prefix_chars="+")
    j.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def _restore_options(r) -> None:
    """Options of a restore (`restore`, and `check --restore`)."""
    import argparse
    r.add_argument("--inherit-stdio", action="store_true",
                   help="give fds 0-2 that were a terminal or a pipe outside the image "
                        "this command's own stdin/stdout/stderr")
    r.add_argument("--shell-job", action="store_true",
                   help="restore a process that ran on a terminal outside the image (started from a "
                        "shell) onto this command's terminal, in its foreground: input and Ctrl-C "
                        "reach it; `restore` then waits for it like a shell for a job and exits "
                        "with its exit status (128+N if signal N killed it)")
    r.add_argument("--fd", action="append", default=[], metavar="N=PATH",
                   help="put PATH at fd N instead of the file it had, whatever that was (a log "
                        "file, a pipe, a terminal), and at every fd that shared it (2>&1, "
                        "children's); opened with fd N's access mode (created and appended to "
                        "if fd N was written to)")
    r.add_argument("--allow-changed-files", action="store_true",
                   help="restore even if files changed since the dump (size, mtime, inode); "
                        "--allow-changed-files=GLOB (repeatable) accepts only the files whose "
                        "path matches GLOB (a GLOB without '/' matches the file's name). Logs "
                        "a process only appends to need neither")
    r.add_argument(CHANGED_GLOB, action="append", default=[], help=argparse.SUPPRESS)
    r.add_argument("--new-pidns", action="store_true",
                   help="restore into a new PID namespace, keeping the image's PIDs inside it, "
                        "so many copies of one image can run at once (prints the PID as seen "
                        "from here)")
    r.add_argument("--new-netns", action="store_true",
                   help="restore into a new network namespace with only a loopback interface, so "
                        "copies of a server can listen on the same ports (reach one with "
                        "nsenter -t PID -n)")
    r.add_argument("--tcp-established", action="store_true",
                   help="keep TCP connections to peers outside the image (re-established as they "
                        "were) after an in-place dump --kill on this host, while the peers hold "
                        "their ends; by default they come back reset by the peer, and one that "
                        "cannot be kept does, with a warning")
    r.add_argument("--port-map", action="append", default=[], metavar="OLD:NEW",
                   help="listen on TCP port NEW where the image listened on OLD (repeatable); "
                        "the image's own connections to it follow: a copy beside the original "
                        "without --new-netns (with --new-pidns for its PIDs)")
    r.add_argument("--deleted-dir", metavar="DIR",
                   help="re-create deleted-but-open files in DIR instead of where they were")
    r.add_argument("--trust-image", action="store_true",
                   help="do what the image says even when an ordinary user owns its directory "
                        "(by default such an image restores only with that user's ids, no "
                        "capabilities, and files that user may open); only for images whose "
                        "writer you trust")


def _restore_kwargs(args) -> dict:
    """restore()'s keywords from the options of _restore_options; --fd paths are
    opened by restore (with the access mode the image's fd had)."""
    fds = {}
    for spec in args.fd:
        num, sep, path = spec.partition("=")
        if not sep or not num.isdigit() or not path:
            print(f"pyckpt {args.command}: error: --fd wants N=PATH (N an fd number), not {spec!r} "
                  f"(see pyckpt {args.command} --help)", file=sys.stderr)
            raise SystemExit(2)
        fds[int(num)] = path
    port_map = {}
    for spec in args.port_map:
        old, sep, new = spec.partition(":")
        if not sep or not old.isdigit() or not new.isdigit() or not 0 < int(old) < 65536 \
                or not 0 < int(new) < 65536:
            print(f"pyckpt {args.command}: error: --port-map wants OLD:NEW (two TCP ports), not "
                  f"{spec!r} (see pyckpt {args.command} --help)", file=sys.stderr)
            raise SystemExit(2)
        if int(new) in port_map.values() and port_map.get(int(old)) != int(new):
            print(f"pyckpt {args.command}: error: --port-map {spec}: port {new} is given twice",
                  file=sys.stderr)
            raise SystemExit(2)
        port_map[int(old)] = int(new)
    allow = True if args.allow_changed_files else list(args.allow_changed_glob) or False
    return dict(fds=fds, inherit_stdio=args.inherit_stdio, allow_changed_files=allow,
                deleted_dir=args.deleted_dir, new_pidns=args.new_pidns, new_netns=args.new_netns,
                trust_image=args.trust_image, shell_job=args.shell_job,
                tcp_established=args.tcp_established, port_map=port_map)


def _restore_flags(args) -> list[str]:
    """The restore options given, as typed."""
    flags = [f"--fd {spec}" for spec in args.fd]
    flags += [f"--{name.replace('_', '-')}" for name in ("inherit_stdio", "allow_changed_files",
                                                         "new_pidns", "new_netns", "trust_image",
                                                         "shell_job", "tcp_established")
              if getattr(args, name)]
    flags += [f"--allow-changed-files={glob}" for glob in args.allow_changed_glob]
    flags += [f"--port-map {spec}" for spec in args.port_map]
    return flags + ([f"--deleted-dir {args.deleted_dir}"] if args.deleted_dir is not None else [])


CHANGED_GLOB = "--allow-changed-glob"  # what --allow-changed-files=GLOB is parsed as


def _spelled(argv: list[str]) -> list[str]:
    """`--allow-changed-files=GLOB` as the hidden `--allow-changed-glob GLOB`: argparse
    cannot give a flag that takes no value (`--allow-changed-files DIR` stays a flag
    and a directory) an optional attached one."""
    out = []
    for i, a in enumerate(argv):
        if a == "--":
            return out + argv[i:]
        if a.startswith("--allow-changed-files="):
            out += [CHANGED_GLOB, a.partition("=")[2]]
        else:
            out.append(a)
    return out


def _common_options(p, default) -> None:
    p.add_argument("--debug", action="store_true", default=default,
                   help="show the traceback of an error (the exit code stays the error's)")
    p.add_argument("--no-progress", action="store_true", default=default,
                   help="never draw a progress bar")


# The fast path: `dump`, `restore`, `show` and `check` command lines made only of the positional
# arguments and of options that are flags, spelled out in full, are parsed here
# without argparse (whose import and parser cost a command ~5-10 ms of start-up);
# any other command line (a value option, an abbreviation, --help, `--`, an
# argument that starts with "-", a PID that is not plain digits) is argparse's.
# tests/test_startup.py holds the two to the same result.
_GLOBAL_FLAGS = ("--debug", "--no-progress")
_FAST = {  # command -> (positional names, flags, defaults of the other options)
    "dump": (("pid", "dir"), ("--kill", "--precopy"), {"max_deleted_size": 64 << 20, "parent": None}),
    "restore": (("dir",), ("--inherit-stdio", "--shell-job", "--allow-changed-files", "--new-pidns",
                           "--new-netns", "--tcp-established", "--trust-image", "--lazy"),
                {"fd": [], "allow_changed_glob": [], "deleted_dir": None, "port_map": []}),
    "show": (("dir",), ("--json",), {}),
    "check": (("dir",), ("--restore", "--inherit-stdio", "--shell-job", "--allow-changed-files",
                         "--new-pidns", "--new-netns", "--tcp-established", "--trust-image"),
              {"fd": [], "allow_changed_glob": [], "deleted_dir": None, "port_map": []}),
}


class _FastArgs:
    """What _fast_parse makes.  An option missing from _FAST (one added to build_parser
    since) still gets argparse's value — the command line parsed by argparse then —
    so the fast path is never wrong, only not fast (tests/test_startup.py says so)."""

    def __init__(self, words: list[str], **values):
        self._words = words
        self.__dict__.update(values)

    def __getattr__(self, name: str):
        if name.startswith("__") or "_words" not in self.__dict__:
            raise AttributeError(name)
        full = build_parser().parse_args(self._words)
        self.__dict__.update({k: v for k, v in vars(full).items() if k not in self.__dict__})
        if name not in self.__dict__:
            raise AttributeError(name)
        return self.__dict__[name]


def _fast_parse(argv: list[str]):
    """The namespace argparse would make of `argv`, for a plain dump or restore
    command line (see above); None for any other."""
    i = 0
    while i < len(argv) and argv[i] in _GLOBAL_FLAGS:
        i += 1
    if i == len(argv) or argv[i] not in _FAST:
        return None
    command = argv[i]
    names, flags, defaults = _FAST[command]
    given, positional = set(), []
    for a in argv[:i] + argv[i + 1:]:
        if a in flags or a in _GLOBAL_FLAGS:
            given.add(a)
        elif a.startswith("-") or not a:
            return None
        else:
            positional.append(a)
    if len(positional) != len(names):
        return None
    values = dict(zip(names, positional))
    if "pid" in values:
        if not (values["pid"].isascii() and values["pid"].isdigit()):
            return None
        values["pid"] = int(values["pid"])
    values.update({f[2:].replace("-", "_"): f in given for f in flags + _GLOBAL_FLAGS})
    for name, default in defaults.items():
        values[name] = list(default) if isinstance(default, list) else default
    return _FastArgs(list(argv), command=command, **values)


def _cmd_dump(args, progress) -> int:
    from . import dump
    from .signals import commit

    image = dump(args.pid, args.dir, kill=args.kill, max_deleted_size=args.max_deleted_size,
                 precopy=args.precopy, parent=args.parent, progress=progress)
    commit(interrupt=False)  # the image stands: a signal from now on is late (see main)
    if image.dump_stats.late_error:  # the image stands; what went wrong after it was complete
        print(f"pyckpt dump: the image at {args.dir} is complete and kept, but "
              f"{_one_line(image.dump_stats.late_error)}", file=sys.stderr)
    unreaped = image.dump_stats.unreaped
    if unreaped:
        held = "; ".join(f"killed process {pid} is a zombie its parent ({errors.describe(parent)}) "
                         f"has not reaped: PID {pid} stays taken until it does"
                         for pid, parent in sorted(unreaped.items()))
        print(f"pyckpt dump: the image is complete, but {held} (a restore needs the PID free, "
              "or --new-pidns)", file=sys.stderr)
    if sys.stderr.isatty():  # for a person; scripts parse stdout and stderr
        print(_dump_summary(args, image), file=sys.stderr)
    return 0


def _dump_summary(args, image) -> str:
    """One line: what the dump wrote, and what a restore of it will need."""
    from .progress import binary_size

    info = image.summary()
    size = sum(f.stat().st_size for f in image.path.iterdir() if f.is_file())
    n = len(info["processes"])
    from .kinds.tty import on_outside_terminal

    stdio, other, job = set(), {}, on_outside_terminal(image._reader)
    terminal = False
    for p in info["processes"]:
        for f in p["fds"]:
            if f["kind"] == "external" and f["what"].startswith("terminal ") and job:
                terminal = True  # the user's terminal: a shell job
            elif f["kind"] == "external":
                if f["fd"] <= 2:
                    stdio.add(f["fd"])
                else:
                    other.setdefault(f["fd"], f["what"])
    needs = ["--shell-job (a terminal outside the image: yours instead)"] if terminal else []
    if stdio:
        needs.append(f"--inherit-stdio (fd {', '.join(map(str, sorted(stdio)))}: a terminal or a "
                     "pipe outside the image)")
    needs += [f"--fd {fd}=PATH (fd {fd}: {what})" for fd, what in sorted(other.items())]
    stats = image.dump_stats
    tcp = info.get("tcp_outside", {})
    tcp = (f"; {tcp['count']} TCP connection{'s' if tcp['count'] != 1 else ''} to peers outside the "
           f"image: {tcp['restore']}") if tcp.get("count") else ""
    return _one_line(
        f"pyckpt dump: wrote {args.dir}: {n} process{'es' if n != 1 else ''}, {binary_size(size)}, "
        f"frozen for {stats.freeze:.2f} s{', then killed' if args.kill else ''}; a restore needs "
        + (" ".join(needs) if needs else "no options") + tcp + _udp_note(image))


def _udp_note(image) -> str:
    """What a restore of the dump's UDP sockets leaves out ('' when nothing)."""
    from .kinds.udp import dropped

    note = dropped(image._reader)
    return f"; {note}" if note else ""


def _dump_left(args) -> str:
    """What a failed dump left at DIR, for its message ('' when that is no news: DIR
    was not a directory, or not empty, and is untouched)."""
    try:
        names = os.listdir(args.dir)
    except FileNotFoundError:
        return "no image directory was made"
    except OSError:
        return ""
    if names == ["INCOMPLETE"]:
        return f"{args.dir} holds only the INCOMPLETE marker, with the reason"
    return "" if names else f"{args.dir} is left empty"


def _say_line(stream, text: str) -> None:
    """`text` and a newline in one write() of `stream` (flushed)."""
    stream.flush()
    stream.write(text + "\n")
    stream.flush()


def _cmd_restore(args, progress) -> int:
    from . import restore
    from .signals import commit

    proc = restore(args.dir, **_restore_kwargs(args), progress=progress, _process=False,
                   lazy=args.lazy)
    args.restored = proc.pid
    commit(interrupt=False)  # the process was released and runs: a signal from now on is late
    # The restored process may write to the same stdout and stderr (--inherit-stdio, or
    # files given with --fd): each line goes out in one write, which print() does not
    # when Python runs unbuffered (PYTHONUNBUFFERED: the text and its newline apart).
    _say_line(sys.stdout, str(proc.pid))
    for h in getattr(proc, "lazy_handlers", ()):
        _say_line(sys.stderr, f"pyckpt restore: lazy: the pages of process {h.pid} come from handler "
                              f"{h.handler} (guard {h.guard}), which exits once all are in")
    for warning in getattr(proc, "restore_warnings", ()):
        _say_line(sys.stderr, f"pyckpt restore: warning: {_one_line(warning)}")
    if args.shell_job:  # wait for it as a shell waits for a job; its exit status is ours
        from .kinds.tty import wait_job

        return wait_job(proc.pid)
    return 0


def _cmd_show(args, progress) -> int:
    from . import open_image

    info = open_image(args.dir).summary()
    if args.json:
        import json

        json.dump(info, sys.stdout, indent=2)
        print()
        return 0
    h = info["header"]
    _out(f"image {info['path']}: process {h['root_pid']} ({h['comm']}), "
          f"{len(info['processes'])} process(es), pyckpt {h['pyckpt_version']}, "
          f"kernel {h['kernel_release']} {h['machine']}")
    if info.get("parent"):
        par = info["parent"]
        stored = sum(p["pages_bytes"] for p in info["processes"])
        _out(f"incremental: parent image {par['resolved']} (written as {par['path']}; "
             f"{par['depth']} image(s) up the chain); memory {stored / 2**20:.1f} MiB stored here, "
             f"{info['inherited_bytes'] / 2**20:.1f} MiB kept in the parent images")
    for p in info["processes"]:
        _show_process(p)
    tcp = info.get("tcp_outside", {})
    if tcp.get("count"):
        closed = f", {tcp['closed']} reset or connecting" if tcp.get("closed") else ""
        _out(f"TCP connections to peers outside the image: {tcp['count']} ({tcp['established']} "
             f"established, {tcp['half_closed']} half-closed{closed}); {tcp['restore']}")
    for o in info["shared_memory"]:
        where = ", ".join(f"process {pid} at {start:#x}" for pid, start, _ in o["mapped_by"])
        _out(f"shared memory #{o['id']}: {o['size'] // 1024} KiB, {o['stored_bytes'] // 1024} KiB "
              f"stored, mapped by {where}")
    for o in info.get("sysv_ipc", []):
        _out(f"{o['what']}: {o['detail']}")
    return 0


def _out(text: str) -> None:
    """A line of `show`: what the image says, never a control character or an escape
    sequence of it (names and paths come from the image)."""
    print(_one_line(text))


def _show_process(p: dict) -> None:
    if p["zombie_status"] is not None:
        _out(f"process {p['pid']} (parent {p['ppid']}): a zombie, wait status {p['zombie_status']:#x}")
        return
    _out(f"process {p['pid']} (parent {p['ppid']}, group {p['pgid']}, session {p['sid']}), "
          f"threads {', '.join(map(str, p['threads']))}")
    inherited = f", {p['inherited_bytes'] / 2**20:.1f} MiB in the parent images" if p["inherited_bytes"] else ""
    zero = f", {p['zero_bytes'] / 2**20:.1f} MiB all zero (not stored)" if p["zero_bytes"] else ""
    _out(f"  memory: {len(p['vmas'])} areas, {p['pages_bytes'] / 2**20:.1f} MiB stored{inherited}{zero}")
    for v in p["vmas"]:
        prot = "".join(c if v["prot"] & b else "-" for c, b in (("r", 1), ("w", 2), ("x", 4)))
        prot += "s" if v["shared"] else "p"
        shared = (f" (shared memory #{v['shared_memory']} at offset {v['offset']:#x})"
                  if v["shared_memory"] is not None else "")
        _out(f"    {v['start']:012x}-{v['end']:012x} {prot} {v['kind']:<11} "
              f"{v['stored_bytes'] // 1024:>9} KiB  {v['name']}{shared}")
    _out(f"  fds: {len(p['fds'])}")
    for f in p["fds"]:
        share = f", shares file #{f['file_id']} with fd {','.join(map(str, f['shared_with']))}" \
            if f["shared_with"] else f", file #{f['file_id']}"
        pos = f" pos {f['pos']}" if f["pos"] is not None else ""
        _out(f"    {f['fd']:>4} {f['kind']:<9} {f['what']} (flags {f['flags']:#o}{pos}"
              f"{', cloexec' if f['cloexec'] else ''}{share})")
    if p["locks"]:
        _out(f"  locks: {len(p['locks'])}")
        for lk in p["locks"]:
            _out(f"    fd {lk['fd']:>4} {lk['lock']} on {lk['path']}")


def _cmd_check(args, progress) -> int:
    from . import open_image

    from .kinds import stored_runs
    from .problems import suggested

    given = _restore_flags(args)
    if given and not args.restore:
        print(f"pyckpt check: error: {' '.join(given)} only mean something with --restore "
              "(see pyckpt check --help)", file=sys.stderr)
        return 2
    if args.restore:  # refused up front, as restore itself is, before the image is read
        from .privileges import require

        require("restore", path=args.dir, new_namespaces=args.new_pidns or args.new_netns)
    image = open_image(args.dir)
    if not args.restore:
        with progress.bar(sum(length for _, length, _ in stored_runs(image._reader)), "check") as bar:
            image.verify(bar.update)
        print(f"image {args.dir} is complete and intact ({len(image.records)} records)")
        return 0
    # restore's own validation, page checksums included
    problems = image.check_restore(**_restore_kwargs(args), progress=progress)
    print(f"image {args.dir} is complete and intact ({len(image.records)} records)")
    how = f"restore with {' '.join(given)}" if given else "restore without options"
    if not problems:
        print(f"restorable here and now: a {how} gets past every check")
        return 0
    for p in problems:
        avoided = f"fix: {' or '.join(map(str, p.fixes))}" if p.fixes else "no restore option avoids this"
        print(f"problem: {_one_line(str(p))} [{avoided}]")
    fixes = suggested(problems)
    if fixes is None:
        stuck = sum(not p.fixes for p in problems)
        print(f"not restorable here: {stuck} of the {len(problems)} problem(s) of a {how} no "
              "restore option avoids")
    else:
        print(f"restorable with: {' '.join(given + [str(f) for f in fixes])}")
    return problems[0].error.exit_code


def _one_line(text: str) -> str:
    """Messages may quote image contents: never let them span lines or carry escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text.replace("\n", " | "))


def _cmd_jupyter(args, progress) -> int:
    from .jupyter.cli import run  # only when used: the other commands start without it

    return run(args.rest, args)


COMMANDS = {"dump": _cmd_dump, "restore": _cmd_restore, "show": _cmd_show, "check": _cmd_check,
            "jupyter": _cmd_jupyter}

# The commands that stop, kill or make processes.  Each runs inside one
# deferred_signals() block: a SIGINT/SIGTERM/SIGHUP/SIGQUIT is noted, never acted on
# half-way.  Until the work is complete (the dump's or restore's own block nests in it
# and acts on it at its checkpoints) it undoes the work: exit 130.  Once complete (the
# image committed, the process released; then the command commits its block too) it
# changes nothing: one line says so, exit 0.  `show` and `check` touch no process and
# stop at once.
HOLDING = ("dump", "restore")


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` (default: the command line of this process).

    Without `argv` pyckpt is the program: once a dump or restore has decided its
    outcome, SIGINT/SIGTERM/SIGHUP/SIGQUIT are ignored until it exits, so its exit
    code is the outcome it reported.  (Before main() runs — Python's imports — they
    act as ever: SIGTERM kills pyckpt, which has touched nothing yet.)
    """
    words = _spelled(sys.argv[1:] if argv is None else list(argv))
    args = _fast_parse(words) or build_parser().parse_args(words)
    if args.command not in HOLDING:
        code = _run(args)
        return _exit_now(code) if argv is None and args.command in QUICK_EXIT else code
    from .signals import blocked, deferred_signals

    with deferred_signals() as held:
        code = _run(args)
        # The outcome is decided: as the program, nothing may change it on the way out.
        held.ignore_after = argv is None
        with blocked():  # (runs the handlers of what was delivered until now)
            late = held.pending if held.complete else []
        if late:
            print(_late_signal(args, late), file=sys.stderr)
    return _exit_now(code) if argv is None else code


# The commands whose program exits at once when done (_exit_now); `jupyter` runs a
# client of its own and exits as Python does.
QUICK_EXIT = ("dump", "restore", "show", "check")


def _exit_now(code: int) -> int:
    """As the program, exit with `code` at once, without the interpreter's teardown
    (every module and object freed one by one, ~4-5 ms of a dump or restore that has
    nothing left to do), once what that teardown would do that anyone could see is
    done: stdout and stderr flushed.  When more is left to do — an atexit callback (a
    coverage tool's, say), a thread that is no daemon still running, a flush that
    fails (Python reports that itself, exit 120) or an exit code Python would print —
    it returns `code`, for Python's own exit."""
    import atexit

    threading = sys.modules.get("threading")
    if not isinstance(code, int) or not 0 <= code <= 255 or getattr(atexit, "_ncallbacks", lambda: 1)() \
            or (threading is not None and any(not t.daemon for t in threading.enumerate()
                                              if t is not threading.main_thread())):
        return code
    try:
        for out in (sys.stdout, sys.stderr):
            if out is not None:
                out.flush()
    except Exception:
        return code
    os._exit(code)


def _late_signal(args, late: list[int]) -> str:
    """One line: signals that came once the work was complete changed nothing."""
    from .signals import _name

    names = " and ".join(dict.fromkeys(_name(s) for s in late))
    if args.command == "dump":
        return (f"pyckpt dump: {names} came after the image at {args.dir} was complete; "
                "it stands (nothing was undone)")
    return (f"pyckpt restore: {names} came after the restore of process {args.restored} was "
            "complete; it runs (nothing was undone)")


def _run(args) -> int:
    """The command, its errors as one line on stderr; the exit code."""
    from .progress import Progress

    progress = Progress(False if args.no_progress else None)
    try:
        return COMMANDS[args.command](args, progress)
    except errors.PyckptError as e:
        _traceback(args)
        left = _dump_left(args) if args.command == "dump" else ""
        print(f"pyckpt {args.command}: error: {_one_line(str(e))}{'; ' + left if left else ''}",
              file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug, or a damage no check caught: still one line
        _traceback(args)
        print(f"pyckpt {args.command}: internal error: {type(e).__name__}: {_one_line(str(e))} "
              "(run with --debug for the traceback, and please report it)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _traceback(args)
        undone = "the work was undone"
        if args.command == "dump":
            undone = f"process {args.pid} runs on as before"
            undone += f"; {_dump_left(args)}" if _dump_left(args) else ""
        print(f"pyckpt {args.command}: interrupted; {_one_line(undone)}", file=sys.stderr)
        return errors.Interrupted.exit_code


def _traceback(args) -> None:
    """With --debug, the traceback of the error being handled; the one-line message
    and the exit code follow as without it."""
    if args.debug:
        import traceback

        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
