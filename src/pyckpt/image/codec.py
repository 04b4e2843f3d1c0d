"""Record payloads: dataclasses <-> JSON, decoded strictly.

A record class is a dataclass registered with `@record(type_id)`.  Its
fields may be int, str, bool, bytes (stored as base64), float, lists of
those, lists of other dataclasses, or `X | None`.  A dataclass is a JSON
object of its fields, or — one whose class says `COMPACT = True` (a memory
area, a page run, a file's identity: hundreds of each in an image) — an
array of its field values in field order, trailing defaulted ones left out
by older writers; the object form is still read for it (format 2).
Decoding checks every field name and type (integers fit in 64 bits, numbers are finite, strings
are text or file-system bytes, paths hold no NUL), so a damaged or foreign
payload is refused with a clear message instead of building a wrong process.
"""

from __future__ import annotations

import binascii
import functools
import math
import sys
import types

from .. import _dataclass as dc
from ..errors import ImageError

RECORD_TYPES: dict[int, type] = {}
# Every integer of a record fits in 64 bits (signed or not): a larger one is damage.
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1
# Fields of these names hold paths and names the kernel takes as C strings: no NUL in
# them (other strings may hold one: an abstract unix socket name, shown as text).
C_STRINGS = frozenset({"path", "cwd", "root", "name", "comm"})


SCOPES = ("process", "image")


def record(type_id: int, *, scope: str):
    """Register a dataclass as an image record with a fixed numeric type and a scope:

    - "process": state of one process, saved in that process's part of the image
      (after its ProcessRecord) and restored into it alone (its registers, its fd
      table, its memory areas);
    - "image": an object saved once, by the first process of the tree that holds
      it, and referred to by id from every holder's process records (an open file
      description, a pipe's buffer, shared memory); restored once, each holder
      getting its reference.  A record of this scope with an `id` field is unique
      by id in its image (kinds.check_tree refuses a second one).
    """
    if scope not in SCOPES:
        raise RuntimeError(f"record type {type_id}: scope must be one of {SCOPES}, not {scope!r}")

    def register(cls):
        from .ids import RECORD_IDS, RETIRED

        name = f"{cls.__module__.removeprefix('pyckpt.')}.{cls.__qualname__}"
        if RECORD_IDS.get(type_id) != name:
            free = max([*RECORD_IDS, *RETIRED]) + 1
            raise RuntimeError(f"record id {type_id} of {name} is not in image/ids.py "
                               f"({RECORD_IDS.get(type_id) or RETIRED.get(type_id) or 'free'} there): "
                               f"take a free id there (e.g. {free}) and list it")
        if type_id in RECORD_TYPES and RECORD_TYPES[type_id] is not cls:
            raise RuntimeError(f"record type {type_id} used twice")
        cls.RECORD_TYPE = type_id
        cls.SCOPE = scope
        RECORD_TYPES[type_id] = cls
        return cls

    return register


def record_type(type_id: int) -> type | None:
    """The record class of `type_id`, its kind module imported the first time it is
    met (image/ids.py names the module): reading an image loads only the kinds
    it uses.  None for an id no record class has."""
    cls = RECORD_TYPES.get(type_id)
    if cls is None:
        from .ids import RECORD_IDS

        name = RECORD_IDS.get(type_id)
        if name is None:
            return None
        # (not importlib.import_module: its import brings `warnings`, and -X importtime
        # does not time what it imports)
        __import__(f"{__package__.rpartition('.')[0]}.{name.rpartition('.')[0]}")
        cls = RECORD_TYPES.get(type_id)
    return cls


# Values encode() gives back as they are, by exact type (a subclass takes the long way).
_PLAIN = frozenset({int, str, bool, float, type(None)})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # a dataclass's field names, looked up once


def encode(obj: object) -> object:
    """`obj` as JSON values: a dataclass as a dict of its fields (in field order), bytes
    as base64 text, a list or tuple as a list, anything else as it is.  The common
    types are told by exact type first (the field names of each class looked up
    once): a dump encodes thousands of values."""
    t = type(obj)
    names = _FIELD_NAMES.get(t)
    if names is not None:
        if _is_compact(t):
            return [v if type(v) in _PLAIN else encode(v) for v in map(obj.__getattribute__, names)]
        out = {}
        for n in names:
            v = getattr(obj, n)
            out[n] = v if type(v) in _PLAIN else encode(v)
        return out
    if t is list or t is tuple:
        return [x if type(x) in _PLAIN else encode(x) for x in obj]
    if t in _PLAIN:
        return obj
    if dc.is_dataclass(obj):
        if not isinstance(obj, type):  # an instance (a class itself is not cached)
            _FIELD_NAMES[t] = tuple(f.name for f in dc.fields(obj))
            if _is_compact(t):
                return [encode(getattr(obj, f.name)) for f in dc.fields(obj)]
        return {f.name: encode(getattr(obj, f.name)) for f in dc.fields(obj)}
    if isinstance(obj, bytes):
        return binascii.b2a_base64(obj, newline=False).decode("ascii")  # (base64.b64encode)
    if isinstance(obj, (list, tuple)):
        return [encode(x) for x in obj]
    return obj


def json_default(obj: object) -> object:
    """What json's encoder, given a record itself, asks for each value it does not take
    as it is: a dataclass's fields as a dict, bytes as base64 text; anything else is
    refused as json.dumps refuses it.  Gives the text `encode()` then json.dumps gives
    (image._record_json; tests/test_image_encode.py holds them to each other)."""
    way = _WAYS.get(type(obj))
    if way is None:
        way = _way(obj)
    if way:
        # Its own __dict__ when that holds as many entries as it has fields: its fields
        # alone (a record's fields are set by its __init__ and never deleted; an attribute
        # set beside them makes one more).  The encoder sorts the keys.  No dict built per
        # value: 526 records of a Python kernel 4.8 -> 3.3 ms.  A compact class's values
        # in field order (a tuple: a JSON array), by its getter.
        names, getter = way
        d = getattr(obj, "__dict__", None)
        if type(d) is dict and len(d) == len(names):
            return d if getter is None else getter(d)
        if getter is not None:
            return [getattr(obj, n) for n in names]
        return {n: getattr(obj, n) for n in names}
    if isinstance(obj, bytes):
        return binascii.b2a_base64(obj, newline=False).decode("ascii")
    raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")


def _way(obj: object):
    """json_default's plan for the type of `obj`, found once per type: (field names, the
    getter of a compact class's values or None) for a dataclass instance, else ()."""
    t = type(obj)
    if not (dc.is_dataclass(obj) and not isinstance(obj, type)):
        return ()  # (not kept: a class itself, bytes, what is refused)
    names = _FIELD_NAMES.get(t)
    if names is None:
        names = _FIELD_NAMES[t] = tuple(f.name for f in dc.fields(obj))
    way = _WAYS[t] = (names, _getter(names) if _is_compact(t) else None)
    return way


_WAYS: dict[type, tuple] = {}  # a dataclass's json_default plan (_way)


def _is_compact(cls: type) -> bool:
    """Whether records of `cls` are written as arrays (a class attribute COMPACT = True)."""
    compact = _COMPACT.get(cls)
    if compact is None:
        compact = _COMPACT[cls] = cls.__dict__.get("COMPACT") is True
    return compact


_COMPACT: dict[type, bool] = {}
def _getter(names: tuple[str, ...]):
    """The values of `names` of a dict, as a tuple (operator.itemgetter, one name too)."""
    if len(names) == 1:
        return lambda d, n=names[0]: (d[n],)
    import operator

    return operator.itemgetter(*names)


@functools.cache
def _fields_of(cls: type) -> tuple[dict[str, object], tuple[str, ...], tuple[str, ...]]:
    """Resolved field types, names, and the names without a default, of a record class
    (resolving is slow: do it once)."""
    fields = dc.fields(cls)
    required = tuple(f.name for f in fields
                     if dc.is_missing(f.default) and dc.is_missing(f.default_factory))
    return type_hints(cls), tuple(f.name for f in fields), required


def type_hints(cls: type) -> dict[str, object]:
    """`typing.get_type_hints(cls)` for a record class, without importing typing (~3 ms
    of every command): its annotations (strings, `from __future__ import annotations`)
    evaluated as get_type_hints evaluates them (the module's namespace, then the
    class's, then builtins), bases first.  Record fields are built-in types, `X | None`, `list[X]`,
    `tuple[...]` and other record classes (tests/test_startup.py compares the two)."""
    hints = {}
    for base in reversed(cls.__mro__):
        module = vars(sys.modules[base.__module__]) if base.__module__ in sys.modules else {}
        own = None
        for name, tp in base.__dict__.get("__annotations__", {}).items():
            if isinstance(tp, str):
                own = dict(vars(base)) if own is None else own
                tp = _annotation(tp, own, module)
            hints[name] = type(None) if tp is None else tp
    return hints


def _annotation(text: str, own: dict, module: dict) -> object:
    """The value of an annotation's text, as eval(text, own, module) gives it: read here
    for names, `X[A, B]`, `A | B` and None (every record field's), without the compiler
    (a process's first compile() costs ~1.3 ms here, each ~0.2 ms); anything else
    compiled and evaluated."""
    tokens = _TOKENS.get(text)
    if tokens is None:
        tokens = _TOKENS[text] = _tokens(text)
    if tokens and tokens.count("[") <= 50:  # (deeper: eval's, which refuses past 200)
        try:
            value, at = _union(tokens, 0, own, module)
            if at == len(tokens):
                return value
        except (KeyError, TypeError, IndexError, AttributeError):
            pass  # (said again by eval, or evaluated otherwise)
    code = _ANNOTATIONS.get(text)
    if code is None:
        code = _ANNOTATIONS[text] = compile(text, "<annotation>", "eval")
    return eval(code, own, module)  # noqa: S307 (our own classes' source)


def _tokens(text: str) -> list[str] | None:
    """The names and `[ ] , |` of an annotation, or None for anything else."""
    out, word = [], ""
    for ch in text + " ":
        if ch.isalnum() or ch in "_.":
            word += ch
            continue
        if word:  # (ASCII identifiers only: eval normalises other names, NFKC)
            if not all(part.isascii() and part.isidentifier() for part in word.split(".")):
                return None
            out.append(word)
            word = ""
        if ch in "[],|":
            out.append(ch)
        elif ch != " ":
            return None
    return out


def _union(tokens: list[str], at: int, own: dict, module: dict) -> tuple[object, int]:
    value, at = _term(tokens, at, own, module)
    while at < len(tokens) and tokens[at] == "|":
        other, at = _term(tokens, at + 1, own, module)
        value = value | other
    return value, at


def _term(tokens: list[str], at: int, own: dict, module: dict) -> tuple[object, int]:
    word = tokens[at]
    if word in "[],|":
        raise TypeError(word)
    first, *rest = word.split(".")
    value = None if first == "None" else _lookup(first, own, module)
    for part in rest:
        value = getattr(value, part)
    at += 1
    if at < len(tokens) and tokens[at] == "[":
        args = []
        while True:
            arg, at = _union(tokens, at + 1, own, module)
            args.append(arg)
            if tokens[at] == "]":
                break
            if tokens[at] != ",":
                raise TypeError(tokens[at])
        value = value[args[0] if len(args) == 1 else tuple(args)]
        at += 1
    return value, at


def _lookup(name: str, own: dict, module: dict) -> object:
    """A name as eval(text, own, module) looks it up: its locals (the module's namespace,
    as typing.get_type_hints has it), its globals (the class's), then the builtins'
    dict (KeyError if none has it: eval then says NameError)."""
    if name in module:
        return module[name]
    if name in own:
        return own[name]
    import builtins

    return vars(builtins)[name]


_TOKENS: dict[str, list[str] | None] = {}  # annotation text -> its tokens (_tokens)
_ANNOTATIONS: dict[str, object] = {}  # annotation text -> its compiled expression


def _origin(tp: object) -> object:
    """typing.get_origin, for the types of record fields."""
    if isinstance(tp, types.UnionType):
        return types.UnionType
    return getattr(tp, "__origin__", None)


def _is_union(origin: object) -> bool:
    return origin is types.UnionType or (origin is not None and getattr(origin, "_name", None) == "Union")


def _b64decode(text: str) -> bytes:
    """base64.b64decode(text, validate=True) for a str, without the base64 module (~0.7 ms
    of a command's start-up): the same binascii call; a non-ASCII text is a ValueError
    (UnicodeEncodeError) there too."""
    return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)


def decode(cls: type, data: object, where: str = "") -> object:
    """`data` (a record's JSON) as a `cls`, every field checked (module docstring).
    Decoded first by converters made once per field type (_fast, several times
    faster); anything they do not take is decoded again by the step-by-step
    checks below, which accept exactly what they accept and say what is wrong."""
    try:
        return _fast_decode(cls, data)
    except _Bad:
        return _checked_decode(cls, data, where)


class _Bad(Exception):
    """A converter of _fast met a value it does not take (_checked_decode says why)."""


def _fast_decode(cls: type, data: object) -> object:
    return _compiled(cls)(data)


@functools.cache
def _compiled(cls: type):
    """The fast decoder of `cls`: a function written for its fields (_plan), each plain
    field checked by a line of its own, the others converted (_fast), no loop over
    field names and no plan looked up per value (~40 % of the decoding of a Python
    kernel's 378 VMAs, each with a file identity and page runs, went to those).
    Its maker is taken from _decoders.py when that has it (written out for pyckpt's
    record classes by scripts/dataclass_inits.py, its bytecode cached by Python),
    else compiled: compiling the ~20 a restore meets took ~9 ms of a command, the
    first compile() of a process ~1.3 ms more."""
    _COMPILING.add(cls)
    try:
        source, env = decoder_source(cls)
    finally:
        _COMPILING.discard(cls)
    try:
        from . import _decoders
    except (ImportError, SyntaxError):  # (missing or damaged: scripts/dataclass_inits.py writes it again)
        _decoders = None
    make = getattr(_decoders, decoder_name(source), None)
    if make is None:
        ns: dict = {}
        exec(compile(source, f"<decoder of {cls.__qualname__}>", "exec"), ns)  # noqa: S102
        make = ns["make"]
    return make(**env)


def decoder_name(source: str) -> str:
    """The name of the maker of `source` (decoder_source) in _decoders.py: its digest,
    so that a maker written for other fields is never taken."""
    import xxhash

    return "make_" + xxhash.xxh3_128_hexdigest(source.encode())


def decoder_source(cls: type) -> tuple[str, dict]:
    """The source of a function `make` that returns `cls`'s fast decoder (_compiled),
    and the keyword arguments to call it with."""
    nameset, required, convs, ints, strs, cstrs, bools, others, direct = _plan(cls)
    names = _fields_of(cls)[1]
    env = {"_Bad": _Bad, "_text": _text, "NAMESET": nameset, "cls": cls, "new": object.__new__,
           "partial": functools.partial(_partial_decode, cls), "partial_list": functools.partial(_partial_list, cls)}
    for i, (n, conv) in enumerate(others):
        env[f"conv{i}"] = conv

    def checks(value) -> list[str]:  # `value(n)`: the expression of field n's value
        out = []
        for n in ints:
            out += [f"    v = {value(n)}",
                    f"    if type(v) is not int or not {INT_MIN} <= v <= {INT_MAX}:",
                    "        raise _Bad"]
        for n in strs:
            out += [f"    v = {value(n)}",
                    "    if type(v) is not str:",
                    "        raise _Bad",
                    "    if not v.isascii():",
                    "        _text(v)"]
            if n in cstrs:
                out += ["    if '\\0' in v:", "        raise _Bad"]
        for n in bools:
            out += [f"    if type({value(n)}) is not bool:", "        raise _Bad"]
        out += [f"    c{i} = conv{i}({value(n)})" for i, (n, _) in enumerate(others)]
        return out

    def made(kw: str) -> list[str]:
        if direct:  # what its __init__ would do: set each field (see _plan)
            return ["    obj = new(cls)", f"    obj.__dict__ = {kw}", "    return obj"]
        return [f"    return cls(**{kw})"]

    lines = ["def decode(data):"]
    if _is_compact(cls):  # an array of the values, in field order
        local = {n: f"f{i}" for i, n in enumerate(names)}
        converted = {n: f"c{i}" for i, (n, _) in enumerate(others)}
        lines += ["    if type(data) is list:",
                  f"        if len(data) != {len(names)}:",
                  "            return partial_list(data)",
                  f"        {', '.join(local[n] for n in names)}{',' if len(names) == 1 else ''} = data"]
        lines += ["    " + line for line in checks(lambda n: local[n])]
        kw = "{" + ", ".join(f"{n!r}: {converted.get(n, local[n])}" for n in names) + "}"
        lines += ["    " + line for line in made(kw)]
    lines += ["    if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)",
              "        raise _Bad",
              "    if data.keys() != NAMESET:",
              "        return partial(data)"]
    lines += checks(lambda n: f"data[{n!r}]")
    lines.append("    kw = dict(data)")
    lines += [f"    kw[{n!r}] = c{i}" for i, (n, _) in enumerate(others)]
    lines += made("kw")
    source = (f"def make({', '.join(env)}):\n" + "".join(f"    {line}\n" for line in lines)
              + "    return decode\n")
    return source, env


_COMPILING: set = set()  # the classes whose decoder _compiled is making


def _partial_list(cls: type, data: list) -> object:
    """A compact record's array without its trailing defaulted fields (an older writer's),
    as the object of the fields it gives."""
    names, required = _fields_of(cls)[1:]
    if not len(required) <= len(data) <= len(names):
        raise _Bad
    return _partial_decode(cls, dict(zip(names, data)))


def _partial_decode(cls: type, data: dict) -> object:
    """Not every field given: those missing must have defaults (docs/image-format.md)."""
    nameset, required, convs = _plan(cls)[:3]
    keys = data.keys()
    if not (keys <= nameset and required <= keys):
        raise _Bad
    return cls(**{n: conv(data[n]) for n, conv in convs if n in data})


def _text(v: str) -> None:
    """A non-ASCII str field: text, or file-system bytes (surrogateescape), else _Bad."""
    try:
        v.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise _Bad from None


@functools.cache
def _plan(cls: type):
    """(field names, names without a default, (name, converter) of each field; the
    int, str, C-string and bool fields, checked in place; (name, converter) of the
    others; whether the instance may be made without calling __init__)."""
    hints, names, required = _fields_of(cls)
    plain = {int, str, bool}
    ints = tuple(n for n in names if hints[n] is int)
    strs = tuple(n for n in names if hints[n] is str)
    return (frozenset(names), frozenset(required),
            tuple((n, _fast(hints[n], n in C_STRINGS)) for n in names),
            ints, strs, tuple(n for n in strs if n in C_STRINGS),
            tuple(n for n in names if hints[n] is bool),
            tuple((n, _fast(hints[n], n in C_STRINGS)) for n in names if hints[n] not in plain),
            _init_sets_fields(cls, names))


def _init_sets_fields(cls: type, names: tuple[str, ...]) -> bool:
    """Whether `cls(**fields)`, every field given, only sets each field: its __init__ is
    the one pyckpt's dataclass made (no other __init__ written), every field is a
    parameter, and its instances keep their attributes in a __dict__."""
    init = cls.__dict__.get("__init__")  # (until first used, a _LazyInit that will make it)
    made = ((isinstance(init, dc._LazyInit) and init.cls is cls)
            or getattr(init, "__globals__", {}).get("_FACTORY") is dc._FACTORY)
    return (made and all(f.init for f in dc.fields(cls)) and len(dc.fields(cls)) == len(names)
            and not any("__slots__" in vars(k) for k in cls.__mro__[:-1]))


def _bad(value):
    raise _Bad


@functools.cache
def _fast(tp: object, c_string: bool = False):
    """A converter of JSON values to `tp`, taking only what _decode_value takes (else
    _Bad), giving what it gives."""
    origin = _origin(tp)
    if _is_union(origin):
        args = tp.__args__
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            return _bad
        one, none_ok = _fast(inner[0], c_string), type(None) in args

        def union(v):
            return None if v is None and none_ok else one(v)

        return union
    if origin is list:
        (inner,) = tp.__args__
        each = _fast(inner, c_string)
        if inner is str:  # (a VMA's flags: ~5 each) checked in the loop, no call each
            def str_list(v):
                if type(v) is not list:
                    raise _Bad
                for x in v:
                    if type(x) is not str or (c_string and "\0" in x):
                        raise _Bad
                    if not x.isascii():
                        _text(x)
                return list(v)

            return str_list
        if inner is int:  # (page digests: thousands of them) checked in the loop, no call each
            def int_list(v):
                if not isinstance(v, list):
                    raise _Bad
                for x in v:
                    if type(x) is not int or not INT_MIN <= x <= INT_MAX:
                        raise _Bad
                return list(v)

            return int_list

        def a_list(v):
            if not isinstance(v, list):
                raise _Bad
            return [each(x) for x in v]

        return a_list
    if origin is tuple:
        convs = tuple(_fast(a) for a in tp.__args__)
        n = len(convs)

        def a_tuple(v):
            if not isinstance(v, list) or len(v) != n:
                raise _Bad
            return tuple(c(x) for c, x in zip(convs, v))

        return a_tuple
    if dc.is_dataclass(tp):
        if tp in _COMPILING:  # (a record class inside itself: bound when first used)
            return lambda v: _compiled(tp)(v)
        return _compiled(tp)
    if tp is bytes:
        def a_bytes(v):
            if not isinstance(v, str):
                raise _Bad
            try:
                return _b64decode(v)
            except ValueError:
                raise _Bad from None

        return a_bytes
    if tp is int:
        def an_int(v):  # (JSON's integers are ints: a subclass takes the checked way)
            if type(v) is not int or not INT_MIN <= v <= INT_MAX:
                raise _Bad
            return v

        return an_int
    if tp is float:
        def a_float(v):
            if (not isinstance(v, (int, float)) or isinstance(v, bool)
                    or not (isinstance(v, float) or INT_MIN <= v <= INT_MAX) or not math.isfinite(v)):
                raise _Bad
            return float(v)

        return a_float
    if tp is str:
        def a_str(v):
            if not isinstance(v, str) or (c_string and "\0" in v):
                raise _Bad
            if not v.isascii():
                try:
                    v.encode("utf-8", "surrogateescape")
                except UnicodeEncodeError:
                    raise _Bad from None
            return v

        return a_str
    if tp is bool:
        def a_bool(v):
            if not isinstance(v, bool):
                raise _Bad
            return v

        return a_bool
    return _bad  # (_decode_value raises its TypeError)


def _checked_decode(cls: type, data: object, where: str = "") -> object:
    where = where or cls.__name__
    hints, names, required = _fields_of(cls)
    if isinstance(data, list) and _is_compact(cls):  # its values in field order
        if not len(required) <= len(data) <= len(names):
            raise ImageError(f"{where}: expected a list of {len(names)} values"
                             f"{f' (at least {len(required)})' if len(required) < len(names) else ''}, "
                             f"found {len(data)}")
        data = dict(zip(names, data))
    if not isinstance(data, dict):
        raise ImageError(f"{where}: expected an object, found {type(data).__name__}")
    if set(data) != set(names):
        # A field added to a record since an image was written has a default, which
        # stands in for it (docs/image-format.md); any other difference is refused.
        missing = sorted(set(required) - set(data))
        extra = sorted(set(data) - set(names))
        if missing or extra:
            raise ImageError(f"{where}: fields do not match (missing {missing}, unknown {extra}"
                             f"{': fields of another pyckpt?' if extra else ''})")
    return cls(**{n: _decode_value(hints[n], data[n], f"{where}.{n}", n in C_STRINGS)
                  for n in names if n in data})


def _decode_value(tp: object, value: object, where: str, c_string: bool = False) -> object:
    origin = _origin(tp)
    if _is_union(origin):
        args = tp.__args__
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode_value(inner, value, where, c_string)
    if origin is list:
        (inner,) = tp.__args__
        if not isinstance(value, list):
            raise ImageError(f"{where}: expected a list")
        return [_decode_value(inner, v, f"{where}[{i}]", c_string) for i, v in enumerate(value)]
    if origin is tuple:
        args = tp.__args__
        if not isinstance(value, list) or len(value) != len(args):
            raise ImageError(f"{where}: expected a list of {len(args)}")
        return tuple(_decode_value(a, v, where) for a, v in zip(args, value))
    if dc.is_dataclass(tp):
        return decode(tp, value, where)
    if tp is bytes:
        if not isinstance(value, str):
            raise ImageError(f"{where}: expected base64 text")
        try:
            return _b64decode(value)
        except ValueError:
            raise ImageError(f"{where}: bad base64") from None
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ImageError(f"{where}: expected an integer")
        if not INT_MIN <= value <= INT_MAX:
            raise ImageError(f"{where}: integer out of range")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ImageError(f"{where}: expected a number")
        if not (isinstance(value, float) or INT_MIN <= value <= INT_MAX) or not math.isfinite(value):
            raise ImageError(f"{where}: number out of range")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ImageError(f"{where}: expected str")
        try:
            value.encode("utf-8", "surrogateescape")  # what it was made from: text or file-system bytes
        except UnicodeEncodeError:
            raise ImageError(f"{where}: a string no file name or text gives") from None
        if c_string and "\0" in value:
            raise ImageError(f"{where}: a NUL character in a name the kernel takes as a C string")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ImageError(f"{where}: expected bool")
        return value
    raise TypeError(f"{where}: unsupported field type {tp!r}")
