"""One module per kind of process state: its record, its dump and its restore.

Each kind module defines its record dataclasses (registered with
`image.record(id, scope=...)`: one process's own, or one object shared by
the image), a `dump(ctx)` that returns records, and restore functions
that restorer.py calls in its stage order.  A kind never reaches into
another kind's internals; what two kinds share goes through the contexts
(`DumpContext`, `RestoreContext` in kinds/context.py).  Where kinds must
come in an order, they declare it (kinds/order.py), never by position.
docs/adding-a-kind.md walks through adding one (the pidfd kind).
"""


def load_all() -> None:
    """Import every kind module, so its records and file kinds are registered."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def before_kill(objects: dict) -> None:
    """The image is complete and its processes are about to be killed: each kind
    module may define `before_kill(objects)` (objects: the dump's objref table)."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        hook = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "before_kill", None)
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
    import importlib
    import os
    import pkgutil

    from ..errors import ImageError

    for mod in pkgutil.iter_modules(__path__):
        validate = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "validate", None)
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
                raise ImageError(f"image at {image.path}: inconsistent {mod.name} records ({e})",
                                 path=image.path) from None


def check_scopes(reader) -> None:
    """Refuse (ImageError) records out of their scope (image/codec.py `record`): a
    record of one process before any process begins, a shared object saved twice
    (under one process or two: one id, two records)."""
    from ..errors import ImageError

    path = reader.path
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

    path = reader.path
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
