#!/usr/bin/env python3
"""Write src/pyckpt/_dataclass_inits.py: the __init__ template of every shape the
dataclasses of pyckpt's modules have (pyckpt/_dataclass.py), as Python source, so
that a command runs no compiler for them (Python caches the module's bytecode).

    python3 scripts/dataclass_inits.py           # write it
    python3 scripts/dataclass_inits.py --check   # exit 1 if it is not up to date

Run it after adding a dataclass or changing the fields of one (tests/test_startup.py
fails until then; a shape it lacks still works, compiled when first met).  The modules
read are those of tests/test_startup.py's test_fast_dataclass_builds_pyckpts_classes.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import types

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
OUT = os.path.join(SRC, "pyckpt", "_dataclass_inits.py")
SKIPPED = ("pyckpt.jupyter", "pyckpt._native", "pyckpt.pytest", "pyckpt.__main__", "pyckpt.fastcopy",
           "pyckpt._dataclass_inits")


def shapes() -> list[tuple]:
    """Every init shape of the dataclasses pyckpt._dataclass made in pyckpt's modules."""
    sys.path.insert(0, SRC)
    import pyckpt
    from pyckpt import _dataclass

    found = set()
    for mod in pkgutil.walk_packages(pyckpt.__path__, "pyckpt."):
        if mod.name.startswith(SKIPPED):
            continue
        module = importlib.import_module(mod.name)
        for obj in vars(module).values():
            if not (isinstance(obj, type) and obj.__module__ == mod.name
                    and "__dataclass_fields__" in obj.__dict__
                    and obj.__dict__.get("__dataclass_params__") in _dataclass._PARAMS.values()):
                continue
            own = obj.__dict__.get("__init__")
            made = isinstance(own, _dataclass._LazyInit) or (
                isinstance(own, types.FunctionType)
                and own.__code__.co_filename in ("<string>", OUT, _dataclass.__file__.replace(
                    "_dataclass.py", "_dataclass_inits.py")))
            if made:
                fields = list(obj.__dict__["__dataclass_fields__"].values())
                found.add(_dataclass.init_shape(fields, obj.__dataclass_params__.frozen))
    return sorted(found)


def text(all_shapes: list[tuple]) -> str:
    from pyckpt._dataclass import template_name, template_source

    out = ['"""__init__ templates of the dataclass shapes of pyckpt\'s modules (pyckpt/_dataclass.py).',
           "",
           "Written by scripts/dataclass_inits.py: do not edit.  _dataclass._template takes a",
           "shape's code from here (no compiler run in a command) and compiles one not here.",
           "A name says the shape: init_<parameters>_<other fields>[_frozen], r a required",
           "parameter, d one with a default, f one with a default factory or such a field.",
           '"""', "", "from __future__ import annotations  # (as _dataclass.py's compiled ones: same flags)",
           ""]
    for shape in all_shapes:
        out += ["", template_source(*shape, name=template_name(*shape))]
    return "\n".join(out)


def main() -> int:
    new = text(shapes())
    try:
        with open(OUT) as f:
            old = f.read()
    except FileNotFoundError:
        old = None
    if "--check" in sys.argv[1:]:
        if old != new:
            print(f"{OUT} is not up to date: run python3 scripts/dataclass_inits.py", file=sys.stderr)
            return 1
        return 0
    if old != new:
        with open(OUT, "w") as f:
            f.write(new)
    print(f"{OUT}: {len(shapes())} shapes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
