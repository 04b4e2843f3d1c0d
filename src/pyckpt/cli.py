"""The `pyckpt` command: parse arguments, call the API, print results.

Errors print one line on stderr and exit with the error class's code
(see `pyckpt --help`); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
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
    (errors.Interrupted, "interrupted by SIGINT/SIGTERM (work undone)"),
]


def _exit_codes_help() -> str:
    lines = ["exit codes:", "  0    success", "  1    other pyckpt error", "  2    bad command line"]
    lines += [f"  {cls.exit_code:<4} {what}" for cls, what in EXIT_CODES]
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="pyckpt",
        description="Checkpoint a running Linux process into an image directory and restore it later.",
        epilog=_exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"pyckpt {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("dump", help="dump a running process into DIR",
                       description="Freeze process PID, write its state into the new or empty "
                                   "directory DIR, and let it carry on (or kill it with --kill).")
    d.add_argument("pid", type=int, metavar="PID")
    d.add_argument("dir", metavar="DIR")
    d.add_argument("--kill", action="store_true",
                   help="kill the process once the image is complete on disk")

    r = sub.add_parser("restore", help="restore the process saved in DIR",
                       description="Re-create the process saved in DIR with its PID. Prints the "
                                   "PID as the only line on stdout once the process runs on its own.")
    r.add_argument("dir", metavar="DIR")

    s = sub.add_parser("show", help="describe an image",
                       description="Print what an image holds: header, memory areas, fds.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--json", action="store_true", help="print JSON")

    c = sub.add_parser("check", help="verify an image completely",
                       description="Read every record and every page of an image and verify "
                                   "all checksums. Exit 0 when the image can be restored from.")
    c.add_argument("dir", metavar="DIR")
    return p


def _cmd_dump(args, progress) -> int:
    from . import dump

    dump(args.pid, args.dir, kill=args.kill, progress=progress)
    return 0


def _cmd_restore(args, progress) -> int:
    from . import restore

    proc = restore(args.dir, progress=progress)
    print(proc.pid, flush=True)
    return 0


def _cmd_show(args, progress) -> int:
    from . import open_image

    info = open_image(args.dir).summary()
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
        return 0
    h = info["header"]
    print(f"image {info['path']}: process {h['root_pid']} ({h['comm']}), "
          f"pyckpt {h['pyckpt_version']}, kernel {h['kernel_release']} {h['machine']}")
    print(f"memory: {len(info['vmas'])} areas, {info['pages_bytes'] / 2**20:.1f} MiB stored")
    for v in info["vmas"]:
        prot = "".join(c if v["prot"] & b else "-" for c, b in (("r", 1), ("w", 2), ("x", 4)))
        prot += "s" if v["shared"] else "p"
        print(f"  {v['start']:012x}-{v['end']:012x} {prot} {v['kind']:<11} "
              f"{v['stored_bytes'] // 1024:>9} KiB  {v['name']}")
    print(f"fds: {len(info['fds'])}")
    for f in info["fds"]:
        share = f" shares its file with fd {','.join(map(str, f['shared_with']))}" if f["shared_with"] else ""
        print(f"  {f['fd']:>4} {f['kind']:<8} flags {f['flags']:#o} pos {f['pos']}"
              f"{' cloexec' if f['cloexec'] else ''} {f['path']}{share}")
    return 0


def _cmd_check(args, progress) -> int:
    from . import open_image

    image = open_image(args.dir)
    with progress.bar(sum(v["stored_bytes"] for v in image.summary()["vmas"]), "check") as bar:
        image.verify(bar.update)
    print(f"image {args.dir} is complete and intact ({len(image.records)} records)")
    return 0


COMMANDS = {"dump": _cmd_dump, "restore": _cmd_restore, "show": _cmd_show, "check": _cmd_check}


def main(argv: list[str] | None = None) -> int:
    from .progress import Progress

    args = build_parser().parse_args(argv)
    progress = Progress(False if args.no_progress else None)
    try:
        return COMMANDS[args.command](args, progress)
    except errors.PyckptError as e:
        if args.debug:
            raise
        print(f"pyckpt {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"pyckpt {args.command}: interrupted; the work was undone", file=sys.stderr)
        return errors.Interrupted.exit_code


if __name__ == "__main__":
    sys.exit(main())
