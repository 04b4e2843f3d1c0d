"""One module per kind of process state: its record, its dump and its restore.

Each kind module defines its record dataclasses (registered with
`image.record`), a `dump(ctx)` that returns records, and restore functions
that restorer.py calls in its stage order.  A kind never reaches into
another kind's internals; what two kinds share goes through the contexts
(`DumpContext`, `RestoreContext` in kinds/context.py).
"""


def load_all() -> None:
    """Import every kind so its record types are registered with the image reader."""
    from . import cpu, creds, files, memory, mm, signals, task, thread  # noqa: F401
