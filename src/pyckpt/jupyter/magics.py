"""`%load_ext pyckpt` in a notebook kernel: the `%pyckpt` line magic.

    %pyckpt save NAME [--stop] [--full]
                                 save this kernel (once the cell has run); after an
                                 earlier save (or a restore) of this kernel only
                                 what changed since is stored (incremental), unless
                                 --full
    %pyckpt restore NAME         replace this kernel by the one saved as NAME
    %pyckpt restore NAME --new-id
                                 bring the one saved as NAME back as a new kernel
                                 beside this one (its id is printed: open it from
                                 another notebook, Kernel > Change kernel)
    %pyckpt list                 what the server saved

A kernel cannot dump itself (pyckpt stops every thread of the process it
saves): the magic asks the Jupyter server that runs this kernel (found as
`jupyter server list` finds it: the one whose PID is this kernel's parent),
which saves it once it is idle, that is once the cell that asked has ended.
The request runs in a thread, so the cell ends at once; the thread prints
the server's answer.  NAME without a '/' is a name under the server's image
directory; a path otherwise.  In the saved image that thread still waits for
the answer: after a restore its connection is gone, and it says instead that
the kernel was restored.
"""

from __future__ import annotations

import os
import shlex
import threading

from .client import JupyterError, Server


def _kernel_id() -> str:
    from ipykernel import get_connection_file

    name = os.path.basename(get_connection_file())
    if not (name.startswith("kernel-") and name.endswith(".json")):
        raise JupyterError(f"this kernel's connection file {name} does not name its kernel id "
                           "(kernel-ID.json): is it run by a Jupyter server?")
    return name[len("kernel-"):-len(".json")]


def _in_thread(what: str, call) -> None:
    def run():
        try:
            print(f"pyckpt: {call()}", flush=True)
        except JupyterError as e:
            print(f"pyckpt: {what} failed: {e}", flush=True)
        except (ConnectionError, OSError) as e:
            if isinstance(e, ConnectionError) or "reset" in str(e).lower():
                print(f"pyckpt: this kernel was restored ({what})", flush=True)
            else:
                print(f"pyckpt: {what} failed: {e}", flush=True)

    threading.Thread(target=run, name=f"pyckpt {what}", daemon=True).start()


def pyckpt_magic(line: str) -> None:
    """%pyckpt save NAME [--stop] [--full] | restore NAME [--new-id] | list"""
    args = shlex.split(line)
    usage = ("usage: %pyckpt save NAME [--stop] [--full] | %pyckpt restore NAME [--new-id] | "
             "%pyckpt list")
    if not args or args[0] not in ("save", "restore", "list"):
        print(usage)
        return
    try:
        server = Server(prefer_pid=os.getppid())
        kernel_id = _kernel_id()
    except JupyterError as e:
        print(f"pyckpt: {e}")
        return
    if args[0] == "list" and len(args) == 1:
        try:
            for i in server.images():
                print(f"{i.get('name')}: kernel {i.get('kernel_id')}, saved {i.get('saved')}"
                      f"{', this kernel' if i.get('kernel_id') == kernel_id else ''}"
                      + (f", incremental on {os.path.basename(i['parent'])}" if i.get("parent")
                         else ""))
        except JupyterError as e:
            print(f"pyckpt: {e}")
        return
    if args[0] == "save" and len(args) >= 2 and set(args[2:]) <= {"--stop", "--full"} \
            and len(set(args[2:])) == len(args[2:]):
        name, stop, full = args[1], "--stop" in args, "--full" in args

        def save():
            r = server.save(kernel_id, name, stop=stop, parent=not full)
            on = f", incremental on {os.path.basename(r['parent'])}" if r.get("parent") else ""
            return (f"saved this kernel to {r['path']} ({r['size'] / 2**20:.1f} MiB{on}, frozen "
                    f"{r['freeze']:.3f} s)")

        print(f"pyckpt: saving this kernel as {name} once this cell has run")
        _in_thread(f"save as {name}", save)
    elif args[0] == "restore" and len(args) == 3 and args[2] == "--new-id":
        name = args[1]

        def copy():
            r = server.restore(name, new_id=True)
            return f"restored {name} as a new kernel {r['id']} (PID {r['pid']})"

        print(f"pyckpt: restoring {name} as a new kernel beside this one")
        _in_thread(f"restore of {name}", copy)
    elif args[0] == "restore" and len(args) == 2:
        name = args[1]

        def restore():
            r = server.restore(name, replace=True)
            return f"restored {name} as PID {r['pid']}"

        print(f"pyckpt: replacing this kernel by the one saved as {name}")
        _in_thread(f"restore of {name}", restore)
    else:
        print(usage)


def load(ipython) -> None:
    ipython.register_magic_function(pyckpt_magic, "line", "pyckpt")
