"""The server side of `pyckpt.jupyter`: REST endpoints of a running Jupyter server
that save the kernels it manages and bring them back (loaded by
`_load_jupyter_server_extension` in `pyckpt/jupyter/__init__.py`).

    GET  /api/pyckpt                           {"version", "image_dir", "pid"}
    GET  /api/pyckpt/images                    [saved kernel, ...] (newest first): those
                                               in image_dir and those saved elsewhere
    POST /api/pyckpt/kernels/KERNEL_ID/save    {"path", "stop": false, "timeout": 30,
                                                "parent": null}
    POST /api/pyckpt/restore                   {"path", "replace": false,
                                                "allow_changed_files": false,
                                                "new_id": false, "lazy": null}

Requests need the server's token, as its own /api/kernels does.  Errors are
JSON {"message", "error" (the pyckpt error class), "exit_code"}: 404 for an
unknown kernel id, 409 for a refusal (busy kernel, PID or port taken, ...),
400 for a bad image.

Save (the kernel keeps its tabs: nothing is asked of the server's channels):
1. the kernel is waited for until idle (`timeout` s; a cell that runs longer
   is a refusal), then, through a silent execute request of the server's
   own (no history, no execution count), ipykernel's parent poller is told
   to watch the parent the kernel will have after a restore (a
   `ParentWatch`, see below) rather than the server's PID.  A kernel the
   server started has JPY_PARENT_PID, the server's PID; a restored kernel's
   parent is the server that restores it, which may be another one (another
   day), and the poller would shut it down within a second ("Parent appears
   to have exited").  For a save that lets the kernel run on, the poller
   gets its value back once the image is written.
2. the server's restarter (auto-restart) of that kernel is paused;
3. `pyckpt.dump(pid, DIR/image, precopy=True, kill=stop)`: the memory is
   copied while the kernel runs, the freeze copies what changed.  Its TCP
   connections to the server (the ZMQ channels of the server and of each
   open tab) are saved with it.  The restore asks for them as they were
   (`tcp_established`): after a `stop` save, within the 600 s pyckpt holds
   them, the tabs go on on the same connections; otherwise they come back
   reset and ZMQ reconnects to the same ports (measured: with reset only,
   an open tab's channels stayed stuck after 1 of 4 stop/restore cycles —
   a reconnection that came while the kernel still held the reset one with
   the same ZMQ identity is ignored by its ROUTER socket, it seems; none in
   10 with tcp_established).  DIR/kernel.json gets the kernel id, kernel name and the
   connection (ports, key, signature scheme): the secret key, so mode 0600.
   With `parent` (a saved kernel's directory, or true: the last save of this
   kernel process, or the image it was restored from, if still there) the
   image is incremental (`dump(..., parent=)`): only the pages of memory that
   changed since are stored, the rest is read from the parent's
   image (which must stay where it is) at restore; kernel.json names the
   parent, and the list shows it.  A chain already MAX_CHAIN deep is refused
   (for true: a full image is made).
4. with `stop`, the kernel has ended: the server keeps the kernel id (its
   tabs stay open, the restarter stays paused so no new empty kernel is
   started) until it is restored; else the restarter runs again.

Restore goes through `PyckptProvisioner` (provisioner.py): the kernel manager
of the saved kernel id (a new one when the server has no such kernel, e.g.
after a server restart) is given the saved ports and key and the restored
process, the server's child.  A kernel that runs under that id is refused
unless `replace` (it is ended first: its state is lost), and only once
restore's own checks found nothing else that would stop the restore.  With
`new_id` the saved kernel comes back as a new kernel instead (a new kernel id,
free ports, the saved key), beside the one of its id, which may still run:
restored in a new PID namespace with the restore's port map (its ZMQ
listeners move to the new ports), its connections to the server reset (they
were the original's); the server connects to it as to a new kernel, and the
kernel is told its new connection file and ports.  A same-id restore refused
because a saved port is taken says so and offers `new_id`.  The restore answers
once every IOPub subscriber the server holds for that kernel (each open tab's,
and the activity watcher) has connected to the restored kernel again (at most
10 s, then a warning): a cell sent at once would otherwise run, and its reply
come, while its output went to no subscriber yet.

While saved, ipykernel's parent poller watches a `ParentWatch` (WATCHER):
the restored kernel watches the parent it has after the restore (the server,
or in a new PID namespace pyckpt's init, PID 1 there: the kernel does not
take it for an orphan's init; it then ends only with the namespace).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import os
import time

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web
from traitlets import Bool, Float, Unicode
from traitlets.config import LoggingConfigurable

from .. import errors
from .provisioner import IMAGE, META, PyckptProvisioner, read_meta

PREFIX = "api/pyckpt"
INDEX = "saved-elsewhere.json"  # in image_dir: the directories saved outside it

# Run silently in the kernel (store_history=False, silent=True): ipykernel's parent poller.
POLLER = "__import__('ipykernel.kernelapp', fromlist=['IPKernelApp']).IPKernelApp.instance().poller"
READ_POLLER = f"getattr({POLLER}, 'parent_pid', None)"
SET_POLLER = ("(lambda p, v: setattr(p, 'parent_pid', v) if hasattr(p, 'parent_pid') else None)"
              "({poller}, {value})")
# The poller's parent_pid while a kernel is saved: an int that ipykernel's loop (`not
# parent_pid and ppid == 1` or `parent_pid and ppid != parent_pid`: then it exits) sees as a
# parent that changes only when this process's parent does, where "this process" starts
# again at a restore (a new start time in /proc/self/stat): the restored kernel watches the
# parent it has then, the restoring server or, restored beside the original, pyckpt's
# PID-namespace init (PID 1 inside, which a plain 0 would take for init: "orphaned").
WATCH = "pyckpt.ParentWatch()"  # its repr
WATCHER = '''
def make():
    import os
    def started():
        with open("/proc/self/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    class ParentWatch(int):
        def __bool__(self):
            return True
        def __ne__(self, ppid):
            now = started()
            if now != self.at[0]:  # restored since: watch the parent it has now
                self.at[:] = [now, ppid]
            return ppid != self.at[1]
        def __eq__(self, ppid):
            return not self.__ne__(ppid)
        __hash__ = int.__hash__
        def __repr__(self):
            return %r
    watch = ParentWatch(0)
    watch.at = [started(), os.getppid()]
    return watch
''' % WATCH
SET_WATCHER = ("(lambda g: None if not hasattr({poller}, 'parent_pid') else exec({src!r}, g) or "
               "setattr({poller}, 'parent_pid', g['make']()))({{}})").format(poller=POLLER, src=WATCHER)
# A copy restored under a new kernel id: its connection file and ports, as the server has them
# (what %connect_info shows, and the kernel id the %pyckpt magic asks about)
# and the port of IOPub's pipe for forked subprocesses' output (a listener of its own, which
# the restore's port map moved too: a subprocess forked now must reach the copy's); and a
# history session of its own in IPython's history.sqlite (the original, which may run on,
# writes the saved one's: the copy's next lines would collide, "Session/line number was not
# unique")
RETARGET = '''
def retarget(conn, port_map):
    from ipykernel.kernelapp import IPKernelApp
    app = IPKernelApp.instance()
    for k, v in conn.items():
        setattr(app, k, v)
    pipe = getattr(app, "iopub_thread", None)
    if pipe is not None and getattr(pipe, "_pipe_port", None) in port_map:
        pipe._pipe_port = port_map[pipe._pipe_port]
    from IPython import get_ipython
    history = getattr(get_ipython(), "history_manager", None)
    if history is not None and hasattr(history, "db_input_cache_lock"):
        with history.db_input_cache_lock, history.db_output_cache_lock:
            history.new_session()
'''
RUN_RETARGET = "(lambda g: exec({src!r}, g) or g['retarget']({conn!r}, {port_map!r}))({{}})"
PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


class SaveRefused(errors.PyckptError):
    """A save or restore the server refused before touching the kernel (busy, not
    running, not a local kernel, taken id).

    Attributes:
        kernel_id: the kernel.
    """

    def __init__(self, message: str, *, kernel_id: str | None = None, status: int = 409):
        self.kernel_id = kernel_id
        self.status = status
        super().__init__(message)


def server_stdio_fds(pid: int) -> dict[str, int]:
    """The kernel's fds that are this server's stdout (1) or stderr (2): ipykernel keeps
    copies of the fds 1 and 2 it was started with (the server's log, a terminal, a
    pipe) for output written below Python.  Saved in kernel.json, so that a restore
    gives them the restoring server's stdout and stderr (not the saving server's log,
    which grew since, or is gone)."""
    mine = {}
    for k in (1, 2):
        try:
            st = os.fstat(k)
        except OSError:
            continue
        mine.setdefault((st.st_dev, st.st_ino), k)
    found = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for name in names:
        try:
            st = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in mine:
            found[name] = mine[st.st_dev, st.st_ino]
    return found


def _problems(path: str, allow: bool, pid, ports: set) -> list:
    """What would stop the restore of `path` once the kernel running under its id
    (PID `pid`, on `ports` and those it binds besides) is ended: restore's own checks
    (pyckpt's check_restore, page checksums too), less the PIDs, thread ids and
    ports that kernel (and its children) hold."""
    ports = set(ports)
    import pyckpt

    from .provisioner import SHARED_FILES, restore_fds

    problems = pyckpt.open_image(os.path.join(path, IMAGE)).check_restore(
        fds=restore_fds(path), tcp_established=True, progress=False,
        allow_changed_files=True if allow else SHARED_FILES)

    held = set()  # the running kernel's PIDs and thread ids, and its children's
    try:
        import psutil

        for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            held.add(p.pid)
            held.update(t.id for t in p.threads())
            ports |= {c.laddr.port for c in p.net_connections(kind="inet") if c.laddr}
    except Exception:  # gone meanwhile: nothing of it is in the way
        pass

    def its_own(e) -> bool:
        if isinstance(e, errors.PidInUseError):
            return e.pid in held
        port = getattr(e, "port", None)
        return port in ports if port is not None else any(f":{p}," in str(e) for p in ports)

    return [p for p in problems if not its_own(p.error)]


def _no_shutdown_request(km) -> None:
    """A kernel saved and stopped: the server must not send it a shutdown request
    (DELETE /api/kernels/ID, the server's own shutdown, a restart).  Nobody would
    read it now, but pyckpt holds the kernel's connections until the restore (see
    kinds/tcpconn.py, tcp_established): what the server sends meanwhile is queued
    there and read by the restored kernel, which would then shut down at once.
    Skipped once (a restart then starts a new kernel the usual way); a restore
    takes it back."""

    async def skip(*args, **kwargs):
        km.__dict__.pop("_async_request_shutdown", None)

    km._async_request_shutdown = skip


class PyckptJupyter(LoggingConfigurable):
    """Configuration of the extension (`c.PyckptJupyter.image_dir = ...`)."""

    image_dir = Unicode(help="where saved kernels named without a '/' go, and what "
                             "GET /api/pyckpt/images lists (default: JUPYTER_DATA_DIR/pyckpt)"
                        ).tag(config=True)
    busy_timeout = Float(30.0, help="how long a save waits for a busy kernel to be idle "
                                    "(seconds) unless the request says").tag(config=True)
    lazy_restore = Bool(False, help="restore kernels lazily unless the request says: the kernel "
                                    "runs before its memory is in, each page read from the image "
                                    "when first touched (pyckpt.restore(lazy=True)); the image "
                                    "must stay until all is in").tag(config=True)

    def _image_dir_default(self):
        from jupyter_core.paths import jupyter_data_dir

        return os.path.join(jupyter_data_dir(), "pyckpt")

    def resolve(self, path: str) -> str:
        if not isinstance(path, str) or not path or "\0" in path:
            raise SaveRefused("a save or restore needs a path: a directory, or a name for one "
                              f"under {self.image_dir}", status=400)
        return os.path.abspath(os.path.join(os.path.expanduser(self.image_dir), path))


class Saver:
    def __init__(self, serverapp, config: PyckptJupyter):
        self.app = serverapp
        self.mkm = serverapp.kernel_manager
        self.config = config
        self.log = serverapp.log
        self.locks: dict[str, asyncio.Lock] = {}

    def _lock(self, kernel_id: str) -> asyncio.Lock:
        return self.locks.setdefault(kernel_id, asyncio.Lock())

    def _km(self, kernel_id: str):
        if kernel_id not in self.mkm:
            known = ", ".join(self.mkm.list_kernel_ids()) or "none"
            raise SaveRefused(f"no kernel {kernel_id} on this server (its kernels: {known}); "
                              "GET /api/kernels or `jupyter server list` shows them",
                              kernel_id=kernel_id, status=404)
        return self.mkm.get_kernel(kernel_id)

    # -- save ---------------------------------------------------------------------------

    async def save(self, kernel_id: str, path: str, *, stop: bool = False,
                   timeout: float | None = None, parent: str | bool | None = None) -> dict:
        timeout = self.config.busy_timeout if timeout is None else float(timeout)
        began = time.perf_counter()
        async with self._lock(kernel_id):
            km = self._km(kernel_id)
            path = self.config.resolve(path)
            pid = getattr(km.provisioner, "pid", None) if km.provisioner is not None else None
            if not await ensure_async(km.is_alive()) or not pid:
                raise SaveRefused(f"kernel {kernel_id} is not running (saved and stopped, dead or "
                                  "starting): nothing to save; restore it or restart it first",
                                  kernel_id=kernel_id)
            if not isinstance(pid, int) or not os.path.exists(f"/proc/{pid}"):
                raise SaveRefused(f"kernel {kernel_id} is not a local process of this server "
                                  f"(its provisioner is {type(km.provisioner).__name__}): pyckpt "
                                  "saves only kernels running on this host", kernel_id=kernel_id)
            inner = _pid_inside(pid)
            if inner != pid:
                raise SaveRefused(f"kernel {kernel_id} runs in a PID namespace of its own (a copy "
                                  f"restored with --new-id: PID {inner} there, {pid} here); pyckpt "
                                  "saves a process under the PID it has here, and a kernel whose "
                                  "PID changes does not work restored: save the kernel it was "
                                  "copied from, or restore its image again", kernel_id=kernel_id)
            if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
                raise SaveRefused(f"{path} exists and is not empty: save kernel {kernel_id} into a "
                                  "new or empty directory", kernel_id=kernel_id)
            parent = self._parent(km, kernel_id, pid, parent)  # checked before the kernel is touched
            await self._wait_idle(km, kernel_id, timeout)
            old = await self._execute(km, kernel_id, "pass", timeout, {"old": READ_POLLER})
            old = old.get("old", {}).get("data", {}).get("text/plain", "None")
            watched = old == WATCH  # saved before: its poller watches as a saved one does
            old = int(old) if old.isdigit() else None
            if not watched and old is not None:
                await self._execute(km, kernel_id, SET_WATCHER, timeout)
            stdio = server_stdio_fds(pid)
            km.stop_restarter()
            import pyckpt

            dump = functools.partial(pyckpt.dump, pid, os.path.join(path, IMAGE), kill=stop,
                                     precopy=True, progress=False,
                                     parent=None if parent is None else os.path.join(parent, IMAGE))
            try:
                os.makedirs(path, exist_ok=True)
                image = await asyncio.get_running_loop().run_in_executor(None, dump)
            except BaseException:
                if old is not None and not watched:  # the kernel runs on as before
                    await self._put_back_poller(km, kernel_id, old, timeout)
                km.start_restarter()
                raise
            meta = self._meta(km, kernel_id, pid, image, stop, old)
            meta["server_stdio"] = stdio
            meta["parent"] = parent
            fd = os.open(os.path.join(path, META), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(meta, f, indent=1)
            self._remember(path)
            km.pyckpt_last = (path, pid)  # a later save's parent (what the kernel's memory was)
            if stop:  # ended by the dump: reap it; the id stays, the restarter paused
                await km.provisioner.wait()
                km.execution_state = "saved"
                km.pyckpt_saved = path
                _no_shutdown_request(km)
            else:
                if old is not None and not watched:
                    await self._put_back_poller(km, kernel_id, old, timeout)
                km.start_restarter()
            phases = {k: round(v, 3) for k, v in (image.dump_stats.phases or {}).items()}
            self.log.info("pyckpt: saved kernel %s (PID %d) to %s in %.2f s (frozen %.3f s)%s; "
                          "phases: %s", kernel_id, pid, path, image.dump_stats.total,
                          image.dump_stats.freeze, ", stopped" if stop else "", phases)
            return dict(self.describe(path, meta), phases=phases, total=round(image.dump_stats.total, 3),
                        took=round(time.perf_counter() - began, 3))

    def _parent(self, km, kernel_id: str, pid: int, parent) -> str | None:
        """The saved kernel directory an incremental save builds on: `parent` (a path or
        name) checked, or for True the last save of this kernel process (or the image it
        was restored from) when it is still there and its chain has room; else None
        (a full image)."""
        from ..image.chain import MAX_CHAIN

        if parent is True:
            path, of = getattr(km, "pyckpt_last", None) or (None, None)
            if path is None or of != pid or not os.path.isfile(os.path.join(path, META)):
                return None
            try:
                return path if self._depth(path) < MAX_CHAIN else None
            except errors.PyckptError:
                return None  # damaged or gone meanwhile: a full image
        if not parent:
            return None
        path = self.config.resolve(parent)
        read_meta(path)  # a saved kernel's directory (an ImageError naming it otherwise)
        if self._depth(path) >= MAX_CHAIN:
            raise SaveRefused(f"{path} is the end of a chain of {MAX_CHAIN + 1} images already: save "
                              f"kernel {kernel_id} without a parent (a full image)",
                              kernel_id=kernel_id, status=409)
        return path

    @staticmethod
    def _depth(path: str) -> int:
        """Images above the saved kernel at `path` (0: a full image); a bad image raises."""
        import pyckpt

        above = pyckpt.open_image(os.path.join(path, IMAGE)).summary()["parent"]
        return 0 if above is None else above["depth"]

    async def _put_back_poller(self, km, kernel_id: str, value: int, timeout: float) -> None:
        """The running kernel's parent poller watches its parent again.  Never an error of
        the save: a cell sent meanwhile may keep the kernel busy past the timeout (the
        request then runs after it)."""
        try:
            await self._execute(km, kernel_id, SET_POLLER.format(poller=POLLER, value=value),
                                timeout)
        except Exception as e:
            self.log.warning("pyckpt: kernel %s: its parent poller was not given back its parent "
                             "PID %s (%s); it ends only once orphaned to init", kernel_id, value, e)

    async def _wait_idle(self, km, kernel_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while getattr(km, "execution_state", "idle") == "busy":
            if time.monotonic() > deadline:
                raise SaveRefused(f"kernel {kernel_id} has been busy running a cell for over "
                                  f"{timeout:g} s: save it once the cell ends (interrupt it, or "
                                  "give a longer timeout)", kernel_id=kernel_id)
            await asyncio.sleep(0.1)

    async def _execute(self, km, kernel_id: str, code: str, timeout: float,
                       expressions: dict | None = None) -> dict:
        """Run `code` silently in the kernel; the evaluated `expressions`."""
        client = km.client()
        client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        try:
            msg_id = client.execute(code, silent=True, store_history=False, allow_stdin=False,
                                    user_expressions=expressions or {})
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                try:
                    if left <= 0:
                        raise TimeoutError
                    reply = await ensure_async(client.get_shell_msg(timeout=left))
                except (TimeoutError, asyncio.TimeoutError, Exception) as e:
                    if isinstance(e, (TimeoutError, asyncio.TimeoutError)) or type(e).__name__ == "Empty":
                        raise SaveRefused(f"kernel {kernel_id} did not answer within {timeout:g} s "
                                          "(busy running a cell, or hung): save it once it is idle "
                                          "(interrupt it, or give a longer timeout)",
                                          kernel_id=kernel_id) from None
                    raise
                if reply.get("parent_header", {}).get("msg_id") == msg_id:
                    return reply["content"].get("user_expressions", {})
        finally:
            client.stop_channels()

    def _meta(self, km, kernel_id, pid, image, stop, old_parent) -> dict:
        conn = km.get_connection_info()
        conn = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in conn.items()}
        import pyckpt

        stats = image.dump_stats
        return {"kernel_id": kernel_id, "kernel_name": km.kernel_name, "pid": pid,
                "connection": conn, "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "stopped": bool(stop), "server_pid": os.getpid(), "parent_poller_was": old_parent,
                "pyckpt_version": pyckpt.__version__, "freeze": stats.freeze, "total": stats.total}

    # -- list ---------------------------------------------------------------------------

    def describe(self, path: str, meta: dict | None = None) -> dict:
        meta = read_meta(path) if meta is None else meta
        size = 0
        for root, _, files in os.walk(path):
            for name in files:
                try:
                    size += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    pass
        return {"path": path, "name": os.path.basename(path), "kernel_id": meta["kernel_id"],
                "kernel_name": meta.get("kernel_name"), "pid": meta.get("pid"),
                "saved": meta.get("saved"), "stopped": meta.get("stopped"),
                "freeze": meta.get("freeze"), "size": size, "parent": meta.get("parent"),
                "ports": [meta["connection"][p] for p in ("shell_port", "iopub_port", "stdin_port",
                                                          "control_port", "hb_port")]}

    def _index(self) -> tuple[str, list[str]]:
        """The file listing the directories saved outside image_dir, and its paths."""
        index = os.path.join(os.path.expanduser(self.config.image_dir), INDEX)
        try:
            with open(index) as f:
                paths = json.load(f)
        except (OSError, ValueError):
            paths = []
        return index, [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []

    def _remember(self, path: str) -> None:
        top = os.path.expanduser(self.config.image_dir)
        if os.path.dirname(path) == os.path.abspath(top):
            return
        index, paths = self._index()
        paths = [p for p in paths if p != path and os.path.isfile(os.path.join(p, META))] + [path]
        try:
            os.makedirs(top, exist_ok=True)
            with open(index + ".new", "w") as f:
                json.dump(paths, f, indent=1)
            os.replace(index + ".new", index)
        except OSError as e:  # the save stands; only the list misses it
            self.log.warning("pyckpt: cannot list %s in %s: %s", path, index, e)

    def images(self) -> list[dict]:
        top = os.path.expanduser(self.config.image_dir)
        found = []
        try:
            names = [os.path.join(top, n) for n in os.listdir(top)]
        except FileNotFoundError:
            names = []
        for path in dict.fromkeys(names + self._index()[1]):
            name = os.path.basename(path)
            if os.path.isfile(os.path.join(path, META)):
                try:
                    found.append(self.describe(path))
                except errors.PyckptError as e:
                    found.append({"path": path, "name": name, "error": str(e)})
        return sorted(found, key=lambda d: d.get("saved") or "", reverse=True)

    # -- restore ------------------------------------------------------------------------

    async def restore(self, path: str, *, replace: bool = False, allow_changed_files: bool = False,
                      new_id: bool = False, lazy: bool | None = None) -> dict:
        path = self.config.resolve(path)
        # the provisioner's options: files that may have changed; memory on first touch
        opts = {"allow_changed_files": bool(allow_changed_files),
                "lazy": self.config.lazy_restore if lazy is None else bool(lazy)}
        meta = read_meta(path)
        import pyckpt

        pyckpt.open_image(os.path.join(path, IMAGE))  # a bad image is refused before anything ends
        if new_id:
            if replace:
                raise SaveRefused("--new-id restores a copy beside the kernel of the saved id, "
                                  "--replace restores over it: ask for one of them", status=400)
            return await self._restore_copy(meta, path, opts)
        kernel_id = meta["kernel_id"]
        async with self._lock(kernel_id):
            try:
                if kernel_id in self.mkm:
                    proc = await self._restore_into(self.mkm.get_kernel(kernel_id), kernel_id, path,
                                                    replace, opts)
                else:
                    proc = await self._restore_new(kernel_id, meta, path, opts)
            except errors.RestoreError as e:
                raise _offer_new_id(e, meta, path) from None
            km = self.mkm.get_kernel(kernel_id)
            await self._wait_subscribers(km, kernel_id)
            km.execution_state = "idle"  # it was saved idle
            km.pyckpt_saved = None
            km.pyckpt_last = (path, proc.pid)  # its memory is that image's: a save's parent
            self.log.info("pyckpt: restored kernel %s from %s as PID %s", kernel_id, path, proc.pid)
            model = self.mkm.kernel_model(kernel_id)
            model["pid"] = proc.pid
            model["restore_warnings"] = getattr(proc, "restore_warnings", [])
            model["restore_seconds"] = getattr(proc, "restore_seconds", None)
            model["lazy"] = opts["lazy"]
            model["lazy_handlers"] = getattr(proc, "lazy_handlers", [])
            return model

    async def _wait_subscribers(self, km, kernel_id: str, timeout: float = 10.0) -> int:
        """Wait until each IOPub subscriber this server holds for the kernel (one per
        open tab, and the activity watcher) is connected again to the restored kernel;
        how many are.  The restored kernel's connections to them come back reset, and
        ZMQ reconnects each socket on its own timer: a tab's shell socket (DEALER: it
        queues the request until connected) may reach the kernel before its IOPub one
        (SUB: the kernel's PUB drops what it publishes before the subscriber is there).
        A cell sent as soon as the restore returned then ran, and its reply came, but its
        output and its idle status were lost: the tab waited for ever (seen 1 restore in
        4 on an idle machine).  Gives up after `timeout` s with a warning."""
        import psutil

        want = self.mkm._kernel_connections.get(kernel_id, 0)
        if getattr(km, "_activity_stream", None) is not None:
            want += 1
        where = (km.ip, km.iopub_port)
        me = psutil.Process()
        began = time.monotonic()
        while True:
            have = sum(1 for c in me.net_connections(kind="tcp")
                       if c.status == psutil.CONN_ESTABLISHED and c.raddr and tuple(c.raddr) == where)
            if have >= want:
                self.log.info("pyckpt: kernel %s: %d IOPub subscriber(s) connected after %.3f s",
                              kernel_id, have, time.monotonic() - began)
                return have
            if time.monotonic() - began > timeout:
                self.log.warning("pyckpt: kernel %s: %d of %d IOPub subscribers connected to the "
                                 "restored kernel after %g s: a tab's output may be lost until "
                                 "it is reloaded", kernel_id, have, want, timeout)
                return have
            await asyncio.sleep(0.01)

    async def _restore_copy(self, meta: dict, path: str, opts: dict) -> dict:
        """The saved kernel as a new kernel (a new id, free ports, the saved key) beside
        whatever runs under its id: see provisioner.py."""
        import uuid

        kernel_id = str(uuid.uuid4())
        # every port it listens on moves: the five of the connection and its own (IOPub's pipe)
        listening = _listening(os.path.join(path, IMAGE))
        port_map = dict(zip(listening, _free_ports([ip for ip, _ in listening.values()])))
        await self._restore_new(kernel_id, meta, path, opts, port_map=port_map)
        km = self.mkm.get_kernel(kernel_id)
        km.execution_state = "idle"
        proc = km.provisioner
        km.pyckpt_last = (path, proc.pid)
        new = {p: getattr(km, p) for p in PORTS}
        try:  # what the kernel knows of itself: its connection file and ports
            await self._execute(km, kernel_id, RUN_RETARGET.format(
                src=RETARGET, conn=dict(new, connection_file=km.connection_file),
                port_map=port_map), self.config.busy_timeout)
        except Exception as e:
            self.log.warning("pyckpt: kernel %s (a copy of %s) still names its original's connection "
                             "file (%s)", kernel_id, meta["kernel_id"], e)
        self.log.info("pyckpt: restored kernel %s from %s as a new kernel %s, PID %s, ports %s",
                      meta["kernel_id"], path, kernel_id, proc.pid, new)
        model = self.mkm.kernel_model(kernel_id)
        model.update(pid=proc.pid, copy_of=meta["kernel_id"], ports=[new[p] for p in PORTS],
                     restore_warnings=getattr(proc, "restore_warnings", []),
                     restore_seconds=getattr(proc, "restore_seconds", None), lazy=opts["lazy"],
                     lazy_handlers=getattr(proc, "lazy_handlers", []))
        return model

    async def _restore_into(self, km, kernel_id: str, path: str, replace: bool, opts: dict):
        """Restore over the kernel manager of a kernel id the server has."""
        if await ensure_async(km.is_alive()):
            if not replace:
                pid = getattr(km.provisioner, "pid", None)
                raise SaveRefused(f"kernel {kernel_id} runs on this server (PID {pid}): restoring "
                                  "the image over it ends it and loses its state; ask for that "
                                  "with --replace (REST: \"replace\": true), or shut it down first",
                                  kernel_id=kernel_id)
            pid = getattr(km.provisioner, "pid", None)
            check = functools.partial(_problems, path, opts["allow_changed_files"], pid, set(km.ports))
            problems = await asyncio.get_running_loop().run_in_executor(None, check)
            if problems:  # the running kernel is not ended for a restore that cannot be made
                raise problems[0].error
            km.stop_restarter()
            await km.provisioner.kill()
            await km.provisioner.wait()
        else:
            km.stop_restarter()
            if km.provisioner is not None and km.provisioner.has_process:
                await km.provisioner.wait()  # reap what the dump ended
        held = km.__dict__.pop("_async_request_shutdown", None)
        old, ready = km.provisioner, km._ready
        km.provisioner = PyckptProvisioner(kernel_id=kernel_id, kernel_spec=km.kernel_spec,
                                           parent=km, image=path, **opts)
        ports = list(km.ports)
        try:
            await km.start_kernel(**getattr(km, "_launch_args", {}))
        except BaseException:  # nothing was made: the kernel id stays as it was (stopped)
            km.provisioner, km._ready = old, ready
            if held is not None:
                km._async_request_shutdown = held
            raise
        if list(km.ports) != ports:  # restarted meanwhile on other ports: watch the saved ones
            self.mkm.stop_watching_activity(kernel_id)
            self.mkm.start_watching_activity(kernel_id)
        return km.provisioner

    async def _restore_new(self, kernel_id: str, meta: dict, path: str, opts: dict,
                           port_map: dict | None = None):
        """A kernel id the server does not have: a new kernel manager for it whose
        provisioner is ours (the server's factory, wrapped for this id only)."""
        factory = self.mkm.kernel_manager_factory
        made = []

        def make(*args, **kwargs):
            km = factory(*args, **kwargs)
            if os.path.basename(kwargs.get("connection_file", "")) == f"kernel-{kernel_id}.json":
                km.provisioner = PyckptProvisioner(kernel_id=kernel_id, kernel_spec=km.kernel_spec,
                                                   parent=km, image=path, port_map=port_map or {},
                                                   **opts)
                made.append(km.provisioner)
                # What the server gives a kernel only once start_kernel has returned: between
                # the kernel's entry in the list (jupyter_client adds it when the restore
                # is done) and then, a GET /api/kernels of a tab or a script found it
                # without last_activity, a 500 (TraitError; seen in CI).
                km.execution_state = "starting"
                km.last_activity = datetime.datetime.now(datetime.timezone.utc)
            return km

        self.mkm.kernel_manager_factory = make
        try:
            await self.mkm.start_kernel(kernel_id=kernel_id, kernel_name=meta.get("kernel_name"))
        finally:
            self.mkm.kernel_manager_factory = factory
        return made[0]


def _pid_inside(pid: int) -> int:
    """`pid` as its own (innermost) PID namespace numbers it (NSpid's last entry)."""
    from ..proc.status import read_status

    try:
        return int(read_status(pid)["NSpid"].split()[-1])
    except (OSError, ValueError, KeyError, IndexError):
        return pid


def _listening(image: str) -> dict[int, tuple[str, int]]:
    """Port -> (address, family) of every listening TCP socket of the saved kernel."""
    import pyckpt
    from ..kinds.tcp import TcpListenerRecord

    return {r.port: (r.address, r.family)
            for r in pyckpt.open_image(image)._reader.of_type(TcpListenerRecord)}


def _free_ports(ips: list[str]) -> list[int]:
    """A free TCP port on each address of `ips`, all distinct (picked as jupyter_client
    picks a new kernel's: bound to port 0, then let go)."""
    import socket

    socks = []
    try:
        for ip in ips:
            s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
            socks.append(s)
            s.bind((ip, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _offer_new_id(e: errors.RestoreError, meta: dict, path: str) -> errors.PyckptError:
    """A restore refused because a port of the saved kernel is taken: said with the way
    out a notebook user has (a copy under a new id, on free ports), not pyckpt's own."""
    text = str(e)
    ports = [meta["connection"][p] for p in PORTS]
    taken = next((p for p in ports if f":{p}," in text or f":{p} " in text), None)
    if taken is None or "in use" not in text:
        return e
    text = text.split("; or listen on another port:")[0]
    return SaveRefused(f"{text}; port {taken} is one of kernel {meta['kernel_id']}'s: restore it "
                       f"as a new kernel on free ports with `pyckpt jupyter restore {path} --new-id` "
                       "(REST: \"new_id\": true; in a notebook: %pyckpt restore NAME --new-id)",
                       kernel_id=meta["kernel_id"])


# -- handlers ---------------------------------------------------------------------------


class _Handler(APIHandler):
    auth_resource = "kernels"

    @property
    def saver(self) -> Saver:
        return self.settings["pyckpt_saver"]

    def body(self) -> dict:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return data

    def fail(self, e: BaseException) -> None:
        status = getattr(e, "status", None) or (400 if isinstance(e, errors.ImageError) else
                                                500 if isinstance(e, errors.InternalError) else 409)
        self.log.warning("pyckpt: %s refused: %s", self.request.path, e)
        self.set_status(status)
        self.finish(json.dumps({"message": str(e), "error": type(e).__name__,
                                "exit_code": getattr(e, "exit_code", 1)}))


class InfoHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self):
        import pyckpt

        self.finish(json.dumps({"version": pyckpt.__version__, "pid": os.getpid(),
                                "image_dir": os.path.expanduser(self.saver.config.image_dir)}))


class ImagesHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self):
        self.finish(json.dumps(self.saver.images()))


class SaveHandler(_Handler):
    @web.authenticated
    @authorized
    async def post(self, kernel_id):
        body = self.body()
        try:
            parent = body.get("parent")
            if parent is not None and not isinstance(parent, (bool, str)):
                raise TypeError("\"parent\" is a saved kernel's directory or name, or true for "
                                "the last save of this kernel")
            result = await self.saver.save(kernel_id, body.get("path"), stop=bool(body.get("stop")),
                                           timeout=body.get("timeout"), parent=parent)
        except errors.PyckptError as e:
            return self.fail(e)
        except (TypeError, ValueError) as e:  # a "timeout" that is no number, ...
            return self.fail(SaveRefused(f"bad save request: {e}", status=400))
        self.finish(json.dumps(result))


class RestoreHandler(_Handler):
    @web.authenticated
    @authorized
    async def post(self):
        body = self.body()
        try:
            model = await self.saver.restore(body.get("path"), replace=bool(body.get("replace")),
                                             allow_changed_files=bool(body.get("allow_changed_files")),
                                             new_id=bool(body.get("new_id")),
                                             lazy=None if body.get("lazy") is None
                                             else bool(body.get("lazy")))
        except errors.PyckptError as e:
            return self.fail(e)
        except Exception as e:  # jupyter_client's own refusals (no such kernel spec, ...)
            self.log.exception("pyckpt: restore failed")
            return self.fail(SaveRefused(f"restore failed: {type(e).__name__}: {e}", status=500))
        self.finish(json.dumps(model, default=str))


def load(serverapp) -> None:
    from jupyter_server.utils import url_path_join

    config = PyckptJupyter(parent=serverapp)
    web_app = serverapp.web_app
    web_app.settings["pyckpt_saver"] = Saver(serverapp, config)
    base = web_app.settings["base_url"]
    web_app.add_handlers(".*$", [
        (url_path_join(base, PREFIX), InfoHandler),
        (url_path_join(base, PREFIX, "images"), ImagesHandler),
        (url_path_join(base, PREFIX, "kernels", r"([^/]+)", "save"), SaveHandler),
        (url_path_join(base, PREFIX, "restore"), RestoreHandler),
    ])
    serverapp.log.info("pyckpt: kernels can be saved and restored at %s (images in %s)",
                       url_path_join(base, PREFIX), config.image_dir)
