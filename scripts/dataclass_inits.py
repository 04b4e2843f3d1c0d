#!/usr/bin/env python3
"""Write src/pyckpt/_dataclass_inits.py: the __init__ template of every shape the
dataclasses of pyckpt's modules have (pyckpt/_dataclass.py), as Python source, so
that a command runs no compiler for them (Python caches the module's bytecode);
and src/pyckpt/image/_decoders.py: the maker of the fast decoder of every record
class and of the classes in their fields (image/codec.py _compiled), likewise.

    python3 scripts/dataclass_inits.py           # write it
    python3 scripts/dataclass_inits.py --check   # exit 1 if it is not up to date

Run it after adding a dataclass or changing the fields of one (tests/test_startup.py
fails until then; a shape or decoder it lacks still works, compiled when first met).  The modules
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
DECODERS = os.path.join(SRC, "pyckpt", "image", "_decoders.py")
SKIPPED = ("pyckpt.jupyter", "pyckpt._native", "pyckpt.pytest", "pyckpt.__main__", "pyckpt.fastcopy",
           "pyckpt._dataclass_inits", "pyckpt.image._decoders")


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


def decoder_classes() -> list[type]:
    """The record classes, the image header, and every dataclass in their fields."""
    from pyckpt import image, kinds
    from pyckpt import _dataclass as dc
    from pyckpt.image import codec

    kinds.load_all()
    todo, seen = [image.Header, *codec.RECORD_TYPES.values()], []
    while todo:
        cls = todo.pop(0)
        if cls in seen:
            continue
        seen.append(cls)
        types = list(codec.type_hints(cls).values())
        while types:  # (every type inside a field's: list[tuple[X, int]] | None has X)
            t = types.pop()
            types += getattr(t, "__args__", ())
            if isinstance(t, type) and dc.is_dataclass(t) and t not in seen:
                todo.append(t)
    return sorted(seen, key=lambda c: (c.__module__, c.__qualname__))


def decoders_text() -> str:
    from pyckpt.image import codec

    out = ['"""Makers of the fast decoders of pyckpt\'s record classes (image/codec.py _compiled).',
           "",
           "Written by scripts/dataclass_inits.py: do not edit.  A maker is named by the digest",
           "of its source (codec.decoder_name): one written for other fields is never taken.",
           '"""']
    done = set()
    for cls in decoder_classes():
        source = codec.decoder_source(cls)[0]
        name = codec.decoder_name(source)
        if name in done:
            continue
        done.add(name)
        out += ["", "", f"# {cls.__module__}.{cls.__qualname__}",
                source.replace("def make(", f"def {name}(", 1).rstrip("\n")]
    return "\n".join(out) + "\n"


def main() -> int:
    stale = []
    for path, new in ((OUT, text(shapes())), (DECODERS, decoders_text())):
        try:
            with open(path) as f:
                old = f.read()
        except FileNotFoundError:
            old = None
        if old == new:
            continue
        stale.append(path)
        if "--check" not in sys.argv[1:]:
            with open(path, "w") as f:
                f.write(new)
    if "--check" in sys.argv[1:]:
        for path in stale:
            print(f"{path} is not up to date: run python3 scripts/dataclass_inits.py", file=sys.stderr)
        return 1 if stale else 0
    print(f"{OUT}: {len(shapes())} shapes" + (", written" if OUT in stale else "")
          + (f"; {DECODERS}: written" if DECODERS in stale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
