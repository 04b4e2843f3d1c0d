"""`dataclass`, built faster: what pyckpt's modules decorate their classes with.

The standard `dataclasses.dataclass` compiles every generated method of every
class from source (`__init__`, `__repr__`, `__eq__`; `__hash__`,
`__setattr__`, `__delattr__` when frozen) and, for a class without a
docstring, computes its signature with `inspect` for one: ~0.3-0.5 ms a
class here, and `pyckpt dump` loads some 90 classes (issue 14: a third of the
command's start-up).  This one lets `dataclasses` process the fields (so
`fields()`, `replace()`, `asdict()`, `is_dataclass()` and
`__dataclass_params__` are as ever) without generating anything, then:

- `__init__`: compiled once per *shape* (how many parameters, which have a
  default or a default factory, which fields are not parameters, frozen or
  not) with placeholder names, and given each class's own names by
  `code.replace` — no compiler run for a shape met before;
- `__eq__`, `__hash__`: the field values as one tuple (`operator.attrgetter`,
  in C), compared or hashed as the standard methods do;
- `__repr__`, `__setattr__`, `__delattr__` (frozen): closures.

It takes the option pyckpt uses (`frozen`); methods a class writes itself
are kept, as `dataclasses` keeps them.  tests/test_startup.py holds its
classes' behaviour to the standard ones'.
"""

from __future__ import annotations

import dataclasses
import operator
import types

_MISSING = dataclasses.MISSING
_FACTORY = dataclasses._HAS_DEFAULT_FACTORY  # the standard __init__'s marker: "call the factory"
_TEMPLATES: dict[tuple, object] = {}  # shape -> the code of its __init__, placeholder names


def dataclass(cls=None, /, *, frozen: bool = False):
    """@dataclass or @dataclass(frozen=True), as `dataclasses.dataclass`."""

    def wrap(cls):
        return _build(cls, frozen)

    return wrap if cls is None else wrap(cls)


def _build(cls, frozen: bool):
    own = cls.__dict__
    documented = own.get("__doc__") is not None
    own_hash = own.get("__hash__", _MISSING)
    explicit_hash = not (own_hash is _MISSING or (own_hash is None and "__eq__" in own))
    if not documented:
        cls.__doc__ = "-"  # (else dataclasses computes one with inspect, then we drop it)
    # fields, class attributes for defaults, __match_args__; no method generated
    dataclasses.dataclass(cls, init=False, repr=False, eq=False)
    fields = dataclasses.fields(cls)
    if "__init__" not in own:
        cls.__init__ = _init(cls, fields, frozen)
    if "__repr__" not in own:
        cls.__repr__ = _repr(cls, [f.name for f in fields if f.repr])
    compared = [f.name for f in fields if f.compare]
    key = _key(compared)
    if "__eq__" not in own:
        def __eq__(self, other):
            if other.__class__ is self.__class__:
                return key(self) == key(other)
            return NotImplemented

        cls.__eq__ = _named(cls, __eq__)
    if frozen:
        if not explicit_hash:
            cls.__hash__ = _named(cls, lambda self: hash(key(self)), "__hash__")
        names = frozenset(f.name for f in fields)

        def __setattr__(self, name, value):
            if type(self) is cls or name in names:
                raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
            super(cls, self).__setattr__(name, value)

        def __delattr__(self, name):
            if type(self) is cls or name in names:
                raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
            super(cls, self).__delattr__(name)

        cls.__setattr__ = _named(cls, __setattr__)
        cls.__delattr__ = _named(cls, __delattr__)
    elif not explicit_hash:
        cls.__hash__ = None  # compared by value, not frozen: unhashable, as dataclasses makes it
    cls.__dataclass_params__ = _params(frozen)
    if not documented:
        cls.__doc__ = (f"{cls.__name__}("
                       + ", ".join(f"{f.name}: {_type_name(f.type)}" for f in fields if f.init) + ")")
    return cls


def _named(cls, fn, name: str | None = None):
    fn.__name__ = name or fn.__name__
    fn.__qualname__ = f"{cls.__qualname__}.{fn.__name__}"
    return fn


def _key(names: list[str]):
    """self -> the tuple of the fields `names` (what the standard methods compare)."""
    if len(names) >= 2:
        return operator.attrgetter(*names)
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda self: (one(self),)
    return lambda self: ()


def _repr(cls, names: list[str]):
    def __repr__(self):
        return (f"{self.__class__.__qualname__}("
                + ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + ")")

    return _named(cls, __repr__)


def _init(cls, fields, frozen: bool):
    """__init__ of the fields: the standard one's parameters, defaults and assignments."""
    params = [f for f in fields if f.init]
    kinds = tuple("f" if f.default_factory is not _MISSING else "d" if f.default is not _MISSING
                  else "r" for f in params)
    # fields that are not parameters but get a value: a factory's (one with a plain
    # default is read from the class, as the standard __init__ leaves it)
    extra = [f for f in fields if not f.init and f.default_factory is not _MISSING]
    extra_kinds = tuple("f" for f in extra)
    shape = (kinds, extra_kinds, frozen)
    code = _TEMPLATES.get(shape)
    if code is None:
        code = _TEMPLATES[shape] = _template(kinds, extra_kinds, frozen)
    # placeholder -> this class's name: p<i> parameters, a<i> attributes (names, or
    # string constants when frozen), g<i> globals (a factory, a default of an extra)
    rename = {}
    for i, f in enumerate(params):
        rename[f"_p{i}"] = f.name
        rename[f"_a{i}"] = f.name
        rename[f"_g{i}"] = f"_dflt_{f.name}"
    for j, f in enumerate(extra):
        rename[f"_a{len(params) + j}"] = f.name
        rename[f"_g{len(params) + j}"] = f"_dflt_{f.name}"
    swap = lambda names: tuple(rename.get(n, n) for n in names)  # noqa: E731
    consts = tuple(rename.get(c, c) if frozen and isinstance(c, str) else c for c in code.co_consts)
    qualname = {"co_qualname": f"{cls.__qualname__}.__init__"} if hasattr(code, "co_qualname") else {}
    code = code.replace(co_varnames=swap(code.co_varnames), co_names=swap(code.co_names),
                        co_consts=consts, **qualname)
    env = {"_FACTORY": _FACTORY, "_object_setattr": object.__setattr__, "__builtins__": __builtins__}
    for f in params + extra:
        env[f"_dflt_{f.name}"] = f.default_factory if f.default_factory is not _MISSING else f.default
    fn = types.FunctionType(code, env, "__init__")
    fn.__defaults__ = tuple(_FACTORY if k == "f" else f.default
                            for f, k in zip(params, kinds) if k != "r") or None
    fn.__qualname__ = f"{cls.__qualname__}.__init__"
    fn.__module__ = cls.__module__
    fn.__annotations__ = {**{f.name: f.type for f in params}, "return": None}
    return fn


def _template(kinds: tuple, extra_kinds: tuple, frozen: bool):
    """The code of an __init__ of this shape, with placeholder names (_p<i> parameters,
    _a<i> fields, _g<i> globals holding a field's default or factory)."""
    args = ["self"] + [f"_p{i}" if k == "r" else f"_p{i}=None" for i, k in enumerate(kinds)]
    lines = []

    def store(i: int, value: str) -> str:
        return f"_object_setattr(self, '_a{i}', {value})" if frozen else f"self._a{i} = {value}"

    for i, k in enumerate(kinds):
        lines.append(store(i, f"_g{i}() if _p{i} is _FACTORY else _p{i}" if k == "f" else f"_p{i}"))
    for j in range(len(extra_kinds)):
        i = len(kinds) + j
        lines.append(store(i, f"_g{i}()"))
    src = f"def __init__({', '.join(args)}):\n" + "".join(f"    {x}\n" for x in lines or ["pass"])
    env: dict = {}
    exec(src, env)
    return env["__init__"].__code__


def _type_name(tp) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", repr(tp))


_PARAMS: dict[bool, object] = {}


def _params(frozen: bool):
    """The __dataclass_params__ of `dataclasses.dataclass(frozen=frozen)` (init, repr and
    eq on), made once by dataclasses itself, on an empty class."""
    if frozen not in _PARAMS:
        _PARAMS[frozen] = dataclasses.dataclass(type("_P", (), {"__doc__": "-"}),
                                                frozen=frozen).__dataclass_params__
    return _PARAMS[frozen]
