"""The read path's fast decoders (image/codec._fast_decode) against the step-by-step
checks (_checked_decode), on every record class of pyckpt: a payload the fast way
takes, the checked way takes too and decodes to an equal record, of the same class;
what the checked way refuses (an ImageError) the fast way refuses too.  Payloads are
made from each class's field types, then one field at a time given odd values.
No process is touched."""

from __future__ import annotations

import pytest

from pyckpt.image import codec
from pyckpt.errors import ImageError
from pyckpt.kinds import load_all
from pyckpt import _dataclass as dc

load_all()
CLASSES = sorted(codec.RECORD_TYPES.values(), key=lambda c: c.RECORD_TYPE)

ODD = [None, True, False, 0, -1, 1 << 63, (1 << 64) - 1, 1 << 64, -(1 << 63), -(1 << 63) - 1, 1.5,
       float("inf"), "", "x", "a\0b", "\udcff", "\ud800", "é", "YQ==", "Y Q==", "YQ", [], [1], ["a"],
       ["a\0"], ["\ud800"], [True], [1 << 64], [[1, 2]], [None], {}, {"x": 1}]


def _sample(tp, name: str):
    origin = codec._origin(tp)
    if codec._is_union(origin):
        return _sample([a for a in tp.__args__ if a is not type(None)][0], name)
    if origin is list:
        return [_sample(tp.__args__[0], name), _sample(tp.__args__[0], name)]
    if origin is tuple:
        return [_sample(a, name) for a in tp.__args__]
    if dc.is_dataclass(tp):
        return _payload(tp)
    return {int: 7, str: "s", bool: True, bytes: "eHk=", float: 1.5}[tp]


def _payload(cls) -> dict:
    hints, names, _ = codec._fields_of(cls)
    return {n: _sample(hints[n], n) for n in names}


def _both(cls, data):
    try:
        fast = codec._fast_decode(cls, data)
    except codec._Bad:
        fast = codec._Bad
    try:
        checked = codec._checked_decode(cls, data)
    except ImageError:
        checked = ImageError
    return fast, checked


def _cases(cls):
    good = _payload(cls)
    yield good
    for name in good:
        for odd in ODD:
            yield {**good, name: odd}
        yield {k: v for k, v in good.items() if k != name}
        yield {**good, "extra": 1}
        if isinstance(good[name], dict):  # one level down: a field of a nested record
            for inner in good[name]:
                for odd in ODD:
                    yield {**good, name: {**good[name], inner: odd}}
        if isinstance(good[name], list) and good[name] and isinstance(good[name][0], dict):
            for inner in good[name][0]:
                for odd in ODD:
                    yield {**good, name: [{**good[name][0], inner: odd}]}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_fast_decoder_takes_only_what_the_checked_one_takes(cls):
    taken = 0
    for data in _cases(cls):
        fast, checked = _both(cls, data)
        if fast is codec._Bad:
            continue  # (decode() then gives the checked way's answer)
        taken += 1
        assert checked is not ImageError, f"{cls.__name__}: fast took {data!r}, the checks refuse it"
        assert type(fast) is type(checked) and fast == checked, (cls.__name__, data, fast, checked)
        assert vars(fast) == vars(checked), (cls.__name__, data)
    assert taken, f"{cls.__name__}: the fast decoder took no payload, not even a good one"


def test_records_are_made_without_their_init_whether_it_was_made_yet_or_not():
    """The fast path makes a record of pyckpt's dataclass without calling __init__ (it
    only sets the fields): for a class whose __init__ is not made yet (_LazyInit,
    until first used) as for one whose is; not for a class with an __init__ of its own."""

    @dc.dataclass
    class Fresh:
        a: int
        b: str = "x"

    assert isinstance(Fresh.__dict__["__init__"], dc._LazyInit)
    assert codec._init_sets_fields(Fresh, ("a", "b"))
    made = codec._fast_decode(Fresh, {"a": 1, "b": "y"})
    assert isinstance(Fresh.__dict__["__init__"], dc._LazyInit), "made through __init__"
    assert made == Fresh(1, "y") and vars(made) == {"a": 1, "b": "y"}
    assert codec._init_sets_fields(Fresh, ("a", "b"))  # (its __init__ made now)

    @dc.dataclass
    class Own:
        a: int

        def __init__(self, a):
            self.a = a * 2

    assert not codec._init_sets_fields(Own, ("a",))
    assert [c.__name__ for c in CLASSES if not codec._init_sets_fields(c, codec._fields_of(c)[1])] == []


@dc.dataclass
class _Node:  # a dataclass inside itself (no record class is, yet)
    kids: list[_Node]
    x: int


def test_a_dataclass_inside_itself_decodes():
    got = codec.decode(_Node, {"kids": [{"kids": [], "x": 2}], "x": 1})
    assert got == _Node([_Node([], 2)], 1)
    with pytest.raises(ImageError):
        codec.decode(_Node, {"kids": [{"kids": [], "x": "2"}], "x": 1})


def _reachable() -> list[type]:
    """Every dataclass a record class holds, the record classes too."""
    seen, todo = [], list(CLASSES)
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        for tp in codec._fields_of(cls)[0].values():
            stack = [tp]
            while stack:
                t = stack.pop()
                if dc.is_dataclass(t):
                    todo.append(t)
                stack += [a for a in getattr(t, "__args__", ()) if a is not type(None)]
    return seen


COMPACT = sorted((c for c in _reachable() if codec._is_compact(c)), key=lambda c: c.__name__)


def _as_list(cls, payload: dict) -> list:
    return [payload[n] for n in codec._fields_of(cls)[1]]


def _list_cases(cls):
    good = _as_list(cls, _payload(cls))
    yield good
    yield good[:-1]  # a trailing field left out: taken only if it has a default
    yield good[:1]
    yield good + [1]
    yield []
    for i in range(len(good)):
        for odd in ODD:
            yield good[:i] + [odd] + good[i + 1:]


def test_the_compact_classes_are_the_memory_areas_their_runs_and_file_identities():
    assert [c.__name__ for c in COMPACT] == ["FileIdentity", "PageRun", "VmaRecord"]


@pytest.mark.parametrize("cls", COMPACT, ids=lambda c: c.__name__)
def test_a_compact_record_as_an_array_is_taken_as_the_checks_take_it(cls):
    """A class written as an array of its values: the fast decoder takes an array only as
    the checked one does (and gives the same record), and its object form (format 2)
    still decodes to the same record as the array."""
    taken = 0
    for data in _list_cases(cls):
        fast, checked = _both(cls, data)
        if fast is codec._Bad:
            continue
        taken += 1
        assert checked is not ImageError, f"{cls.__name__}: fast took {data!r}, the checks refuse it"
        assert type(fast) is type(checked) and fast == checked and vars(fast) == vars(checked)
    assert taken, f"{cls.__name__}: the fast decoder took no array"
    good = _payload(cls)
    assert codec.decode(cls, good) == codec.decode(cls, _as_list(cls, good))
    with pytest.raises(ImageError, match="expected a list of"):
        codec.decode(cls, _as_list(cls, good) + [1])
