"""One module per kind of process state: its record, its dump and its restore.

Each kind module defines its record dataclasses (registered with
`image.record(id, scope=...)`: one process's own, or one object shared by
the image), a `dump(ctx)` that returns records, and restore functions
that restorer.py calls in its stage order.  A kind never reaches into
another kind's internals; what two kinds share goes through the contexts
(`DumpContext`, `RestoreContext` in kinds/context.py).  Where kinds must
come in an order, they declare it (kinds/order.py), never by position.
docs/adding-a-kind.md walks through adding one (the pidfd kind).

Which kinds are loaded: a dump loads DUMP_KINDS (the core ones, and those
with hooks every process meets: memory mappings, the fd table's hooks, dump
hooks) and, for each fd it meets, the kinds that may claim an fd of its type
(FD_KINDS, `load_for_fd`; the target's fds are looked at before the freeze,
so that this is done then).  Reading an image loads only the kinds it uses (`load_used`):
the module of each record type met, found by id in image/ids.py (image/codec.py
`record_type`), the CORE kinds every process has, and the kinds of its memory
areas' mapped objects (MAPPED_KINDS).  A kind the image does not use is not
needed: its records, file kinds, table hooks, restore hooks and `validate` all
act on its own records, of which there are none (a restore option that needs a
kind whatever the image holds loads it: `load_for`).  Declared order
(kinds/order.py) ignores the names of kinds not loaded, so the kinds loaded keep
the order they have when all are (tests/test_startup.py).
"""

# The kinds whose records every process of an image has (and restorer.py's stages use).
CORE = ("cpu", "creds", "files", "itimers", "memory", "mm", "signals", "task", "thread")
# VmaRecord.kind of each memory.MappedObject -> its kind module: an area of that kind
# needs the module (its validate, its mapping) even if the image lacks its records.
MAPPED_KINDS = {"deleted": "deleted", "memfd": "memfd", "shared_anon": "shmem", "sysv_shm": "sysvipc"}
# restore options -> the kind each needs whatever the image holds (shell_job: tty's checks
# of the caller's terminal; port_map: tcp's refusal of a port no listener of the image has)
OPTION_KINDS = {"shell_job": "tty", "port_map": "tcp"}


# A dump's kinds beside those of its fds: the core ones, and those with a hook every
# process meets (mapped objects, table hooks — epoll's notes every process's fds for
# the sets of others —, dump hooks).
DUMP_KINDS = CORE + ("deleted", "epoll", "locks", "memfd", "regfile", "shmem", "sysvipc", "tty")
# type of an fd -> the kinds whose `claims` may take such an fd (each claims only fds of
# its types, or is one of DUMP_KINDS: tests/test_startup.py holds every kind to this)
FD_KINDS = {"socket": ("tcp", "tcpconn", "udp", "unix", "unixname"), "fifo": ("pipes",),
            "anon inode": ("eventfds", "inotify", "pidfd")}


def fd_type(link: str, mode: int) -> str | None:
    """The FD_KINDS type of an fd (its /proc/PID/fd link and st_mode); None for a type
    the DUMP_KINDS alone may claim (files, directories, devices)."""
    import stat

    if stat.S_ISSOCK(mode) or link.startswith("socket:"):
        return "socket"
    if stat.S_ISFIFO(mode) or link.startswith("pipe:"):
        return "fifo"
    if link.startswith("anon_inode:"):
        return "anon inode"
    return None


def _import(module: str) -> None:
    """Import `module` (a kind): importlib.import_module without importlib (whose
    import brings `warnings`: ~0.6 ms of a command), and an import `python -X
    importtime` sees (it does not time importlib's, so bench/startup.py's profile
    would leave the kinds out)."""
    __import__(module)


def load_for_dump(pid: int) -> dict[int, str]:
    """Import DUMP_KINDS and the kinds of the fds process `pid` has now (read before
    the freeze, so that no import lengthens it; an fd of another type met during the
    dump loads its kinds then: `load_for_fd`).  Returns the links of those fds (fd ->
    its /proc link), as they were (the dump's early refusals read them too)."""
    import os

    for name in DUMP_KINDS:
        _import(f"{__name__}.{name}")
    types = set()
    links: dict[int, str] = {}
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = links[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            types.add(fd_type(link, 0))
    except OSError:
        pass  # (the dump says what is wrong with the process)
    for t in types - {None}:
        _load_types(t)
    return links


def load_for_fd(link: str, mode: int) -> None:
    """Import the kinds that may claim an fd of this link and st_mode (FD_KINDS)."""
    t = fd_type(link, mode)
    if t is not None:
        _load_types(t)


def _load_types(t: str) -> None:
    import sys

    for name in FD_KINDS[t]:
        if f"{__name__}.{name}" not in sys.modules:
            _import(f"{__name__}.{name}")


def load_all() -> None:
    """Import every kind module, so its records and file kinds are registered."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def load_used(reader) -> None:
    """Import the kinds the records of `reader` use beyond those their decoding
    imported: CORE, and the kinds of mapped objects its memory areas name."""
    for name in CORE:
        _import(f"{__name__}.{name}")
    from .memory import VmaRecord

    for kind in {r.kind for r in reader.records if isinstance(r, VmaRecord)}:
        if kind in MAPPED_KINDS:
            _import(f"{__name__}.{MAPPED_KINDS[kind]}")


def load_for(options) -> None:
    """Import the kinds a restore with `options` (RestoreOptions) needs whatever the
    image holds (OPTION_KINDS)."""
    for option, name in OPTION_KINDS.items():
        if getattr(options, option, False):
            _import(f"{__name__}.{name}")


def loaded(name: str):
    """Kind module `name` if it is loaded, else None: an image read since has no
    record of it (reading loads the kind of every record), so a caller asking for
    its records may take none."""
    import sys

    return sys.modules.get(f"{__name__}.{name}")


def _loaded_modules() -> list:
    """The kind modules loaded now, by name (the order all of them had, pkgutil's)."""
    import sys

    prefix = f"{__name__}."
    return [m for n, m in sorted(sys.modules.items())
            if n.startswith(prefix) and "." not in n[len(prefix):] and m is not None]


def before_freeze(pid: int) -> None:
    """Process `pid` is about to be frozen: each kind module may define
    `before_freeze(pid)` to make ready, while it still runs, what its dump will need
    (those of the kinds the dump loaded run)."""
    for module in _loaded_modules():
        hook = getattr(module, "before_freeze", None)
        if hook is not None:
            hook(pid)


def before_kill(objects: dict) -> None:
    """The image is complete and its processes are about to be killed: each kind
    module may define `before_kill(objects)` (objects: the dump's objref table); those
    of the kinds the dump loaded run (a kind it did not load saved nothing)."""
    for module in _loaded_modules():
        hook = getattr(module, "before_kill", None)
        if hook is not None:
            hook(objects)


def stored_runs(image) -> list[tuple[int, int, int]]:
    """(offset, length, xxh3) of every run any record keeps in pages.img.

    A record class that stores bytes in the page store (memory pages, the
    content of a deleted file...) has a `stored_runs()` method; restore and
    `pyckpt check` verify all of them before anything is created.
    """
    runs = []
    for rec in image.records:
        method = getattr(rec, "stored_runs", None)
        if method is not None:
            runs += method()
    return runs


def check_consistency(image) -> None:
    """Refuse an image whose records do not fit together (ImageError), before anything
    is created: each kind module may define `validate(image)`; checksums only prove
    the bytes are what was written, this proves they make one process."""
    import os

    from ..errors import ImageError

    for module in _loaded_modules():  # (reading loaded every kind the image uses)
        validate = getattr(module, "validate", None)
        if validate is not None:
            try:
                validate(image)
            except ImageError as e:
                if e.path is None:
                    e.path = os.fspath(image.path)
                raise
            except (KeyError, ValueError) as e:
                # A reference to a record that is not there, a value out of its range:
                # damage.  Anything else a validator raises is a bug (the boundary's
                # InternalError), never reported as a damaged image.
                name = module.__name__.rpartition(".")[2]
                raise ImageError(f"image at {image.path}: inconsistent {name} records ({e})",
                                 path=image.path) from None


def check_scopes(reader) -> None:
    """Refuse (ImageError) records out of their scope (image/codec.py `record`): a
    record of one process before any process begins, a shared object saved twice
    (under one process or two: one id, two records)."""
    from ..errors import ImageError

    path = reader.where  # (str(reader.path), without pathlib)
    started = not any(getattr(r, "STARTS_PROCESS", False) for r in reader.records)
    seen: dict[tuple[type, int], int] = {}  # (record class, id) -> the process part it is in
    part = 0
    for rec in reader.records:
        if getattr(rec, "STARTS_PROCESS", False):
            started, part = True, part + 1
        if type(rec).SCOPE == "process":
            if not started:
                raise ImageError(f"image at {path}: a {type(rec).__name__} of no process (before the "
                                 "first process begins)", path=path)
        elif isinstance(getattr(rec, "id", None), int):
            key = (type(rec), rec.id)
            if key in seen:
                where = ("both in the part of one process" if seen[key] == part else
                         f"in the parts of processes #{seen[key]} and #{part}")
                raise ImageError(f"image at {path}: shared object {type(rec).__name__} #{rec.id} is "
                                 f"saved twice ({where}); each is saved once, by its first holder",
                                 path=path)
            seen[key] = part


def check_tree(reader) -> None:
    """Refuse (ImageError) an image whose records do not make one process tree — no
    process, a zombie first, a process listed twice, a parent missing, a process
    whose records do not fit together (check_consistency) — so that no reader
    (summary, check, restore) meets a dangling reference.  ImageReader runs it
    when it opens an image."""
    from ..errors import ImageError
    from . import task

    path = reader.where  # (str(reader.path), without pathlib)
    load_used(reader)
    check_scopes(reader)
    views = task.process_views(reader)
    if not views:
        raise ImageError(f"image at {path} holds no process", path=path)
    if task.is_zombie(views[0]):
        raise ImageError(f"image at {path}: its first process is a zombie", path=path)
    recs = []
    for view in views:
        if task.is_zombie(view):
            recs.append(view.one(task.ZombieRecord))
        else:
            check_consistency(view)
            recs.append(view.one(task.TaskRecord))
    pids = {r.pid for r in recs}
    if len(pids) != len(recs):
        raise ImageError(f"image at {path}: a process is listed twice", path=path)
    for r in recs[1:]:
        if r.ppid not in pids:
            raise ImageError(f"image at {path}: process {r.pid} has no parent in the image", path=path)
