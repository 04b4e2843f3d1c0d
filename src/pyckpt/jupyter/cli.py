"""`pyckpt jupyter save|restore|list`: ask a running Jupyter server (with the
pyckpt.jupyter extension) to save one of its kernels, bring one back, or list
what it saved.  Only the standard library is imported (client.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .client import Server


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (as `pyckpt`'s own)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pyckpt jupyter",
                description="Save a kernel of a running Jupyter server (its tabs stay open) and "
                            "bring it back under the same kernel id. The server must run the "
                            "pyckpt.jupyter extension, as root, on this host; without --server it "
                            "is found as `jupyter server list` finds it.")
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = sub.add_parser("save", help="save kernel KERNEL_ID into DIR",
                       description="Save kernel KERNEL_ID (as GET /api/kernels lists it) into the "
                                   "new or empty directory DIR: it is copied while it runs (short "
                                   "freeze) once it is idle, and runs on, or ends with --stop "
                                   "(the server keeps its id for a restore).")
    s.add_argument("kernel_id", metavar="KERNEL_ID")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--stop", action="store_true",
                   help="end the kernel once saved (the server keeps its id and tabs, and does "
                        "not restart it)")
    s.add_argument("--parent", metavar="PREV",
                   help="an incremental save: only what changed since the kernel saved in PREV "
                        "(a directory `pyckpt jupyter save` wrote, or a name under the server's "
                        "image directory) is stored; PREV must stay where it is for a restore")
    s.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="how long to wait for a busy kernel to finish its cell (server default 30)")
    r = sub.add_parser("restore", help="restore the kernel saved in DIR under its kernel id",
                       description="Restore the kernel saved in DIR under its kernel id, ports and "
                                   "key: open tabs reconnect to it. A kernel that runs under that "
                                   "id is refused unless --replace; --new-id restores a copy "
                                   "beside it instead.")
    r.add_argument("dir", metavar="DIR")
    r.add_argument("--replace", action="store_true",
                   help="end the kernel running under the saved id first (its state is lost)")
    r.add_argument("--new-id", action="store_true",
                   help="restore it as a new kernel (a new kernel id, free ports) beside the one "
                        "of the saved id, which may still run: open it as a new notebook's kernel")
    r.add_argument("--lazy", action="store_true", default=None,
                   help="run the kernel before its memory is in: each page comes from the image "
                        "when first touched, the rest in the background (keep DIR until then); "
                        "default: the server's c.PyckptJupyter.lazy_restore")
    r.add_argument("--allow-changed-files", action="store_true",
                   help="restore even if files the kernel had open changed since the save "
                        "(IPython's history database may change without it)")
    ls = sub.add_parser("list", help="list the kernels the server saved",
                        description="List the saved kernels of the server's image directory and "
                                    "those it saved elsewhere.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    for q in (s, r, ls):
        q.add_argument("--server", metavar="URL", help="the server's URL (default: the one running "
                                                       "server `jupyter server list` shows)")
        q.add_argument("--token", metavar="TOKEN", help="the server's token (default: the found "
                                                        "server's, or $JUPYTER_TOKEN)")
    return p


def _path(d: str) -> str:
    """DIR as the server must see it: absolute (the server runs on this host)."""
    return os.path.abspath(d)


def run(argv: list[str], outer=None) -> int:
    args = build_parser().parse_args(argv)
    if args.debug and outer is not None:
        outer.debug = True
    from ..progress import binary_size

    server = Server(args.server, args.token)
    if args.action == "save":
        parent = None if args.parent is None else (args.parent if "/" not in args.parent
                                                   and not os.path.isdir(args.parent)
                                                   else _path(args.parent))
        r = server.save(args.kernel_id, _path(args.dir), stop=args.stop, timeout=args.timeout,
                        parent=parent)
        print(f"saved kernel {r['kernel_id']} (PID {r['pid']}) to {r['path']}: "
              f"{binary_size(r['size'])}"
              + (f" (incremental on {r['parent']})" if r.get("parent") else "")
              + f", frozen for {r['freeze']:.3f} s"
              + ("; it has ended, `pyckpt jupyter restore` brings it back" if r["stopped"]
                 else "; it runs on"), flush=True)
    elif args.action == "restore":
        r = server.restore(_path(args.dir), replace=args.replace,
                           allow_changed_files=args.allow_changed_files, new_id=args.new_id,
                           lazy=args.lazy)
        if r.get("copy_of"):
            print(f"restored kernel {r['copy_of']} as a new kernel {r['id']} ({r['name']}), PID "
                  f"{r['pid']}, ports {' '.join(map(str, r['ports']))}", flush=True)
        else:
            print(f"restored kernel {r['id']} ({r['name']}) as PID {r['pid']}"
                  + (f" (lazily: its memory comes in as it is touched, served by PID "
                     f"{', '.join(map(str, r['lazy_handlers']))})" if r.get("lazy_handlers") else ""),
                  flush=True)
        for w in r.get("restore_warnings") or ():
            print(f"pyckpt jupyter restore: warning: {w}", file=sys.stderr)
    else:
        images = server.images()
        if args.json:
            json.dump(images, sys.stdout, indent=2)
            print()
        for i in images if not args.json else ():
            if "error" in i:
                print(f"{i['path']}: {i['error']}")
                continue
            print(f"{i['path']}: kernel {i['kernel_id']} ({i['kernel_name']}), saved {i['saved']}, "
                  f"{binary_size(i['size'])}{', stopped' if i['stopped'] else ''}"
                  + (f", incremental on {i['parent']}" if i.get("parent") else ""))
    return 0
