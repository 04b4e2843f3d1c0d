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
