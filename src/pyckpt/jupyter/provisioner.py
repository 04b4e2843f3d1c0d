"""The kernel provisioner that brings a saved kernel back (entry point
`pyckpt-provisioner` of group `jupyter_client.kernel_provisioners`).

A `LocalProvisioner` whose first launch restores the image at `image`
instead of starting a new process: the kernel manager is given the saved
connection (transport, address, the five ports, the signing key and scheme,
CurveZMQ keys if any) before the launch, so the server's channels (and the
open tabs' websockets, whose ZMQ sockets reconnect on their own) talk to the
restored kernel.  The restore runs in the server's own process, so the
restored kernel is the server's child: poll, interrupt (SIGINT to its
process group), restart, shutdown and kill work as for a kernel the server
started.  A later restart of the kernel (the user's "Restart kernel") starts
a new empty one the ordinary way, on the same ports.

With `lazy` the kernel runs before its memory is in: pyckpt's handler
process reads each page from the image when first touched and pushes the
rest in the background (pyckpt/lazy.py); the image must stay until then.

IPython's history database (history.sqlite), which every kernel of the user
writes, may have changed since the save: SQLite reads it again at each
transaction, so it is not refused; any other file the kernel had open that
changed is (a FileChangedError naming it), unless `allow_changed_files`.

The kernel's fds that were the saving server's stdout and stderr (ipykernel
keeps copies of them; its fds 1 and 2 are its own capture pipes; kernel.json's
`server_stdio` names them) get this server's stdout and stderr.

A copy under a new kernel id (`port_map` given: the saved ports -> free ones)
is restored beside the original, which may still run: in a new PID namespace
(its PIDs are the original's), its ZMQ listeners on the new ports (the
restore's port map, kinds/tcp.py), with the saved key; its connections to the
saving server come back reset (they were the original's), and the server
connects to the new ports.  Its parent is then pyckpt's namespace init (the
server's child, which ends when the kernel has ended): the server waits for
that one and signals the kernel and its process group.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Bool, Dict, Unicode

# Files every kernel of the user writes: IPython's history database (SQLite, which reads
# the file again for each transaction, so it may change under a restored kernel).
SHARED_FILES = ["history.sqlite"]
META = "kernel.json"  # in a saved kernel's directory: what the server needs to own it again
IMAGE = "image"  # the pyckpt image, beside it


class RestoredProcess:
    """The restored kernel, as the `subprocess.Popen` LocalProvisioner expects
    (the server's child, so it can be waited for)."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int, child: int | None = None):
        self.pid = pid
        self.child = pid if child is None else child  # what the server waits for (its child)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.child, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: it is gone
                self.returncode = -signal.SIGKILL
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                import subprocess

                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def read_meta(path: str) -> dict:
    """A saved kernel's kernel.json, checked (a RestoreError naming the file)."""
    from ..errors import ImageError

    where = os.path.join(path, META)
    try:
        with open(where) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ImageError(f"{path} is not a saved Jupyter kernel: it has no {META} (save one with "
                         "`pyckpt jupyter save KERNEL_ID DIR`)", path=path) from None
    except (OSError, ValueError) as e:
        raise ImageError(f"{where} cannot be read as a saved kernel's description: {e}",
                         path=path) from e
    conn = meta.get("connection") if isinstance(meta, dict) else None
    ports = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
    if (not isinstance(conn, dict) or not isinstance(meta.get("kernel_id"), str)
            or not all(isinstance(conn.get(p), int) and 0 < conn[p] < 65536 for p in ports)
            or not isinstance(conn.get("key"), str) or not isinstance(conn.get("ip"), str)
            or conn.get("transport") != "tcp"):
        raise ImageError(f"{where} is damaged: it lacks the kernel id, the tcp address, a port "
                         "or the key", path=path)
    stdio = meta.get("server_stdio", {})
    if not isinstance(stdio, dict) or not all(
            isinstance(n, str) and n.isdigit() and int(n) < 1 << 20 and k in (1, 2)
            for n, k in stdio.items()):
        raise ImageError(f"{where} is damaged: server_stdio must map fd numbers to 1 or 2",
                         path=path)
    return meta


def server_stdio(image: str) -> dict[int, int]:
    """fds={n: 1 or 2} for the image's fds that are the same file as this server's
    stdout or stderr (its log file: same path; or the same pipe).  ipykernel keeps
    copies of its original fds 1 and 2 (at other numbers: 0-2 are its own capture
    pipes, in the image) for output written below Python; the saving server noted
    which were its own (kernel.json's server_stdio, which the caller adds).  The log
    grew since: the restored kernel writes where this server writes, not over what
    was added.  Others are left to the restore's own checks (a FileChangedError or
    an fd outside the image names them)."""
    import re

    import pyckpt

    mine = {}
    for k in (1, 2):
        try:
            mine.setdefault(os.readlink(f"/proc/self/fd/{k}"), k)
        except OSError:
            pass
    fds = {}
    for f in pyckpt.open_image(image).summary()["processes"][0]["fds"]:
        pipe = re.match(r"(?:\w+ )?((?:pipe|socket):\[\d+\])", f.get("what") or "")
        target = f.get("path") or (pipe.group(1) if pipe else None)
        if target in mine and f["kind"] in ("regular", "external"):
            fds[f["fd"]] = mine[target]
    return fds


def restore_fds(path: str) -> dict[int, int]:
    """restore()'s fds= for the saved kernel at `path`: the kernel's fds that were
    the saving server's stdout/stderr (kernel.json) or are this server's."""
    fds = server_stdio(os.path.join(path, IMAGE))
    fds.update({int(n): k for n, k in read_meta(path).get("server_stdio", {}).items()})
    return fds


class PyckptProvisioner(LocalProvisioner):
    """Restores the kernel saved at `image` (a directory `pyckpt jupyter save`
    wrote) on its first launch; later launches start a new kernel as
    LocalProvisioner does."""

    image = Unicode("", config=True, help="directory of the saved kernel to restore")
    allow_changed_files = Bool(False, config=True, help="restore even if files the kernel had "
                                                        "open changed since the save")
    lazy = Bool(False, config=True, help="restore lazily: memory read from the image on first "
                                        "touch (pyckpt.restore(lazy=True))")
    port_map = Dict(config=True, help="saved port -> the port the restored kernel listens on "
                                      "(a copy under a new kernel id, restored in a new PID "
                                      "namespace beside the original)")
    restored_pid = None  # set once restored

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        if self.image and self.restored_pid is None:
            conn = read_meta(self.image)["connection"]
            km = self.parent
            km.transport, km.ip = conn["transport"], conn["ip"]
            for p in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"):
                setattr(km, p, self.port_map.get(conn[p], conn[p]))
            km.session.signature_scheme = conn.get("signature_scheme", km.session.signature_scheme)
            km.session.key = conn["key"].encode()
            if conn.get("curve_publickey") and conn.get("curve_secretkey"):
                km.curve_publickey = conn["curve_publickey"].encode()
                km.curve_secretkey = conn["curve_secretkey"].encode()
            self.ports_cached = True  # these ports, not new ones (a restart keeps them too)
        return await super().pre_launch(**kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        if not self.image or self.restored_pid is not None:
            return await super().launch_kernel(cmd, **kwargs)
        import pyckpt

        image = os.path.join(self.image, IMAGE)
        copy = bool(self.port_map)  # beside the original: its PIDs, its connections are not ours
        restore = functools.partial(pyckpt.restore, image, fds=restore_fds(self.image), progress=False,
                                    tcp_established=not copy, new_pidns=copy,
                                    port_map={int(k): int(v) for k, v in self.port_map.items()},
                                    lazy=bool(self.lazy),
                                    allow_changed_files=True if self.allow_changed_files
                                    else SHARED_FILES)
        import time

        t = time.perf_counter()
        proc = await asyncio.get_running_loop().run_in_executor(None, restore)
        self.restore_seconds = time.perf_counter() - t  # pyckpt.restore's own time
        self.restore_warnings = list(getattr(proc, "restore_warnings", ()))
        # lazy: pyckpt's page handler processes (each a lazy.Handler: pid, handler, guard)
        self.lazy_handlers = [h.handler for h in getattr(proc, "lazy_handlers", ())]
        self.process = RestoredProcess(proc.pid, proc.ppid() if copy else None)
        self.pid = self.restored_pid = proc.pid
        try:
            self.pgid = os.getpgid(proc.pid)
        except OSError:
            self.pgid = None
        self.cwd = kwargs.get("cwd") or os.getcwd()
        return self.connection_info
