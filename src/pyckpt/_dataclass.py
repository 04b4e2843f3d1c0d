"""`dataclass`, built faster: what pyckpt's modules decorate their classes with.

The standard `dataclasses.dataclass` compiles every generated method of every
class from source (`__init__`, `__repr__`, `__eq__`; `__hash__`,
`__setattr__`, `__delattr__` when frozen) and, for a class without a
docstring, computes its signature with `inspect` for one: ~0.3-0.5 ms a
class here, and `pyckpt dump` loads some 90 classes (issue 14: a third of the
command's start-up).  Importing `dataclasses` itself costs more still (it
loads `inspect`, hence `ast`, `dis`, `tokenize`, and `copy`: ~8 ms of every
command), so this module does not import it: it reads the fields itself
(annotations, defaults, `field()`s, fields of dataclass bases), as
`dataclasses` does, and makes

- `__init__`: one code per *shape* (how many parameters, which have a
  default or a default factory, which fields are not parameters, frozen or
  not) with placeholder names, given each class's own names by `code.replace`.
  The shapes of pyckpt's own classes are written out in _dataclass_inits.py
  (made by scripts/dataclass_inits.py, held to them by tests/test_startup.py),
  whose bytecode Python caches: no compiler run in a command (~0.15 ms a shape,
  some 20 shapes a dump or restore); another shape is compiled when first met;
- `__eq__`, `__hash__`: the field values as one tuple (`operator.attrgetter`,
  in C), compared or hashed as the standard methods do;
- `__repr__`, `__setattr__`, `__delattr__` (frozen): closures;
- `__dataclass_fields__`, `__dataclass_params__`, `__match_args__`, as the
  standard ones, so `dataclasses.fields()`, `replace()`, `asdict()` and
  `is_dataclass()` take its classes (a Field's `_field_type`, which they
  look at, is `dataclasses._FIELD`, that module imported only when asked).

`field`, `fields`, `replace` and `is_dataclass` here are the standard ones for
these classes, without the import.  A class this module does not read as
`dataclasses` would (a `ClassVar`, `InitVar` or `KW_ONLY` annotation) is left
to `dataclasses.dataclass`.  It takes the option pyckpt uses (`frozen`);
methods a class writes itself are kept, as `dataclasses` keeps them.
tests/test_startup.py holds its classes' behaviour to the standard ones'.
"""

from __future__ import annotations

import operator
import types


class _Missing:
    def __repr__(self):
        return "<MISSING>"


MISSING = _Missing()  # "no default" (dataclasses.MISSING's part)


def is_missing(value) -> bool:
    """Whether a Field's default (or default_factory) is "none": this MISSING, or
    dataclasses' (a field of a class the standard dataclass made)."""
    return value is MISSING or type(value).__name__ == "_MISSING_TYPE"


class _Factory:
    def __repr__(self):
        return "<factory>"


_FACTORY = _Factory()  # the __init__'s marker for "call the factory"
_TEMPLATES: dict[tuple, object] = {}  # shape -> the code of its __init__, placeholder names


class Field:
    """A field, as `dataclasses.Field` (same attributes); `_field_type` is
    dataclasses' marker of a plain field, that module imported when it asks."""

    __slots__ = ("name", "type", "default", "default_factory", "init", "repr", "hash",
                 "compare", "metadata", "kw_only")

    def __init__(self, default=MISSING, default_factory=MISSING, init=True, repr=True,
                 hash=None, compare=True, metadata=None, kw_only=MISSING):
        self.name = self.type = None
        self.default, self.default_factory = default, default_factory
        self.init, self.repr, self.hash, self.compare = init, repr, hash, compare
        self.metadata = types.MappingProxyType(metadata or {})
        self.kw_only = kw_only

    @property
    def _field_type(self):
        import dataclasses

        return dataclasses._FIELD

    def __repr__(self):
        return (f"Field(name={self.name!r},type={self.type!r},default={self.default!r},"
                f"default_factory={self.default_factory!r},init={self.init!r},repr={self.repr!r},"
                f"hash={self.hash!r},compare={self.compare!r},metadata={self.metadata!r},"
                f"kw_only={self.kw_only!r},_field_type=_FIELD)")


def field(*, default=MISSING, default_factory=MISSING, init=True, repr=True, hash=None,
          compare=True, metadata=None, kw_only=MISSING):
    """As `dataclasses.field`."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, init, repr, hash, compare, metadata, kw_only)


def is_dataclass(obj) -> bool:
    cls = obj if isinstance(obj, type) else type(obj)
    return hasattr(cls, "__dataclass_fields__")


def fields(obj) -> tuple:
    """The fields of a dataclass or of one of its instances, in order."""
    try:
        all_fields = obj.__dataclass_fields__
    except AttributeError:
        raise TypeError("must be called with a dataclass type or instance") from None
    return tuple(f for f in all_fields.values() if f.__class__ is Field or _plain(f))


def _plain(f) -> bool:
    """A field of the standard dataclasses that is a field (not a ClassVar or InitVar)."""
    import dataclasses

    return f._field_type is dataclasses._FIELD


def replace(obj, /, **changes):
    """As `dataclasses.replace`: a new instance, `changes` over `obj`'s fields."""
    for f in fields(obj):
        if not f.init:
            if f.name in changes:
                raise ValueError(f"field {f.name} is declared with init=False, it cannot be "
                                 "specified with replace()")
            continue
        if f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return obj.__class__(**changes)


_UNREAD = ("ClassVar", "typing.ClassVar", "InitVar", "dataclasses.InitVar", "KW_ONLY",
           "dataclasses.KW_ONLY")


def _fields_of(cls) -> dict | None:
    """The fields of `cls` as `dataclasses.dataclass` finds them (bases' first), its class
    attributes set as it sets them; None when it has an annotation only dataclasses reads."""
    own = cls.__dict__.get("__annotations__", {})
    for tp in own.values():
        if not isinstance(tp, str) or tp.startswith(_UNREAD):
            return None
    found = {}
    for base in cls.__mro__[-1:0:-1]:
        base_fields = base.__dict__.get("__dataclass_fields__")
        if base_fields:
            for f in base_fields.values():
                if f.__class__ is not Field and not _plain(f):
                    return None
                found[f.name] = f
    for name, tp in own.items():
        default = getattr(cls, name, MISSING)
        if isinstance(default, Field):
            f = default
        elif type(default).__name__ == "Field" and type(default).__module__ == "dataclasses":
            std = [MISSING if type(v).__name__ == "_MISSING_TYPE" else v
                   for v in (default.default, default.default_factory, default.kw_only)]
            f = Field(std[0], std[1], default.init, default.repr, default.hash, default.compare,
                      default.metadata, std[2])
        else:
            if isinstance(default, types.MemberDescriptorType):
                default = MISSING  # a slot
            f = Field(default)
        f.name, f.type = name, tp
        if f.default is not MISSING and f.default.__class__.__hash__ is None:
            raise ValueError(f"mutable default {type(f.default)} for field {name} is not "
                             "allowed: use default_factory")
        found[name] = f
        if isinstance(cls.__dict__.get(name), Field) or \
                type(cls.__dict__.get(name)).__name__ == "Field":
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
    for name, value in cls.__dict__.items():
        if isinstance(value, Field) and name not in own:
            raise TypeError(f"{name!r} is a field but has no type annotation")
    return found


def dataclass(cls=None, /, *, frozen: bool = False):
    """@dataclass or @dataclass(frozen=True), as `dataclasses.dataclass`."""

    def wrap(cls):
        return _build(cls, frozen)

    return wrap if cls is None else wrap(cls)


def _build(cls, frozen: bool):
    own = cls.__dict__
    found = _fields_of(cls)
    if found is None:  # (an annotation only dataclasses reads)
        import dataclasses

        return dataclasses.dataclass(cls, frozen=frozen)
    documented = own.get("__doc__") is not None
    own_hash = own.get("__hash__", MISSING)
    explicit_hash = not (own_hash is MISSING or (own_hash is None and "__eq__" in own))
    cls.__dataclass_fields__ = found
    fields = list(found.values())
    if "__match_args__" not in own:
        cls.__match_args__ = tuple(f.name for f in fields if f.init)
    if "__init__" not in own:
        defaulted = False
        for f in fields:
            if f.init and is_missing(f.default) and is_missing(f.default_factory):
                if defaulted:
                    raise TypeError(f"non-default argument {f.name!r} follows default argument")
            elif f.init:
                defaulted = True
        cls.__init__ = _LazyInit(cls, fields, frozen)
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
                raise _frozen_error()(f"cannot assign to field {name!r}")
            super(cls, self).__setattr__(name, value)

        def __delattr__(self, name):
            if type(self) is cls or name in names:
                raise _frozen_error()(f"cannot delete field {name!r}")
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


class _LazyInit:
    """A class's `__init__` until first looked up (an instance made, or
    `cls.__init__` read): then it makes the real one (_init), puts it on the class
    in its place, and hands it out.  A command loads many classes it never makes
    an instance of (records of kinds an image lacks, options it is not given):
    those cost no __init__ (~0.1 ms each, a compile for a new shape)."""

    __slots__ = ("cls", "fields", "frozen")

    def __init__(self, cls, fields, frozen: bool):
        self.cls, self.fields, self.frozen = cls, fields, frozen

    def __get__(self, instance, owner=None):
        cls = self.cls
        real = cls.__dict__.get("__init__")
        if real is self:
            real = _init(cls, self.fields, self.frozen)
            type.__setattr__(cls, "__init__", real)
        elif isinstance(real, _LazyInit):  # (another's, copied: make its own)
            return real.__get__(instance, owner)
        return real if instance is None else real.__get__(instance, owner)


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
    # fields that are not parameters but get a value: a factory's (one with a plain
    # default is read from the class, as the standard __init__ leaves it)
    extra = [f for f in fields if not f.init and f.default_factory is not MISSING]
    shape = kinds, extra_kinds, _ = init_shape(fields, frozen)
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
        env[f"_dflt_{f.name}"] = f.default_factory if f.default_factory is not MISSING else f.default
    fn = types.FunctionType(code, env, "__init__")
    fn.__defaults__ = tuple(_FACTORY if k == "f" else f.default
                            for f, k in zip(params, kinds) if k != "r") or None
    fn.__qualname__ = f"{cls.__qualname__}.__init__"
    fn.__module__ = cls.__module__
    fn.__annotations__ = {**{f.name: f.type for f in params}, "return": None}
    return fn


def init_shape(fields, frozen: bool) -> tuple:
    """The shape of the __init__ of these fields: ("r" a required parameter, "d" one with
    a default, "f" one with a default factory ...), ("f" a field that is no parameter
    but has a factory ...), frozen."""
    kinds = tuple("f" if f.default_factory is not MISSING else "d" if f.default is not MISSING
                  else "r" for f in fields if f.init)
    return kinds, tuple("f" for f in fields if not f.init and f.default_factory is not MISSING), frozen


def _template(kinds: tuple, extra_kinds: tuple, frozen: bool):
    """The code of an __init__ of this shape, with placeholder names (_p<i> parameters,
    _a<i> fields, _g<i> globals holding a field's default or factory): written out in
    _dataclass_inits.py, else compiled from template_source."""
    from . import _dataclass_inits

    made = getattr(_dataclass_inits, template_name(kinds, extra_kinds, frozen), None)
    if made is not None:
        return made.__code__.replace(co_name="__init__")
    env: dict = {}
    exec(template_source(kinds, extra_kinds, frozen), env)
    return env["__init__"].__code__


def template_name(kinds: tuple, extra_kinds: tuple, frozen: bool) -> str:
    """The name of a shape's template in _dataclass_inits.py."""
    return f"init_{''.join(kinds)}_{''.join(extra_kinds)}{'_frozen' if frozen else ''}"


def template_source(kinds: tuple, extra_kinds: tuple, frozen: bool, name: str = "__init__") -> str:
    """The source of _template's code (a function `name`)."""
    args = ["self"] + [f"_p{i}" if k == "r" else f"_p{i}=None" for i, k in enumerate(kinds)]
    lines = []

    def store(i: int, value: str) -> str:
        return f"_object_setattr(self, '_a{i}', {value})" if frozen else f"self._a{i} = {value}"

    for i, k in enumerate(kinds):
        lines.append(store(i, f"_g{i}() if _p{i} is _FACTORY else _p{i}" if k == "f" else f"_p{i}"))
    for j in range(len(extra_kinds)):
        i = len(kinds) + j
        lines.append(store(i, f"_g{i}()"))
    return f"def {name}({', '.join(args)}):\n" + "".join(f"    {x}\n" for x in lines or ["pass"])


def _type_name(tp) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", repr(tp))


_PARAMS: dict[bool, object] = {}


def _params(frozen: bool):
    """The __dataclass_params__ of `dataclasses.dataclass(frozen=frozen)` (init, repr and
    eq on)."""
    if frozen not in _PARAMS:
        _PARAMS[frozen] = _DataclassParams(True, True, True, False, False, frozen)
    return _PARAMS[frozen]


class _DataclassParams:
    """dataclasses' __dataclass_params__ (same attributes and repr)."""

    __slots__ = ("init", "repr", "eq", "order", "unsafe_hash", "frozen")

    def __init__(self, init, repr, eq, order, unsafe_hash, frozen):
        self.init, self.repr, self.eq, self.order = init, repr, eq, order
        self.unsafe_hash, self.frozen = unsafe_hash, frozen

    def __repr__(self):
        return (f"_DataclassParams(init={self.init!r},repr={self.repr!r},eq={self.eq!r},"
                f"order={self.order!r},unsafe_hash={self.unsafe_hash!r},frozen={self.frozen!r})")


def _frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError
