"""The dump's write path: records.img comes out as the step-by-step encoder made it
(image/codec.encode, ImageWriter), byte for byte, whichever types the fields hold; the
page copier's kept buffer is no part of the copy of pyckpt a restore starts from."""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import re

import pyckpt
from pyckpt import image as image_module
from pyckpt.image import ImageReader, ImageWriter, codec

from conftest import start_ctarget


def _reference(obj):
    """The encoder as it was before the fast path: every value told by isinstance (a
    class with COMPACT = True as the array of its values, in field order)."""
    if dataclasses.is_dataclass(obj):
        if type(obj).__dict__.get("COMPACT") is True:
            return [_reference(getattr(obj, f.name)) for f in dataclasses.fields(obj)]
        return {f.name: _reference(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, (list, tuple)):
        return [_reference(x) for x in obj]
    return obj


class _Num(enum.IntEnum):
    SEVEN = 7


class _Text(str):
    pass


def _odd_values(rec):
    """`rec` with its fields given other types of the same meaning: an IntEnum for an
    int, a str subclass, a tuple for a list, bytes where a list was."""
    out = []
    for f in dataclasses.fields(rec):
        v = getattr(rec, f.name)
        for other in ([_Num.SEVEN] if type(v) is int else [_Text(v)] if type(v) is str
                      else [tuple(v), [b"\0\xff", None, 1.5]] if type(v) is list else []):
            out.append(dataclasses.replace(rec, **{f.name: other}))
    return out


def test_records_encode_as_the_step_by_step_encoder_did(spawn, ctarget, tmp_path):
    t = start_ctarget(spawn, ctarget, tmp_path)
    pyckpt.dump(t.pid, tmp_path / "img")
    reader = ImageReader(tmp_path / "img")
    assert len({type(r) for r in reader.records}) >= 8
    seen = 0
    for rec in reader.records:
        for r in [rec, *_odd_values(rec)]:
            want = json.dumps(_reference(r), sort_keys=True)
            assert json.dumps(codec.encode(r), sort_keys=True) == want, type(r).__name__
            assert image_module._record_json(r) == want, type(r).__name__  # the writer's way
            seen += 1
    assert seen > 100
    assert any(type(r).__dict__.get("COMPACT") is True for r in reader.records)  # (arrays met too)
    # ... and the writer makes the same records.img from the same records (one write
    # for all of them now): byte for byte, its digests taken by the reader again.
    out = ImageWriter(tmp_path / "again")
    out.write_header(reader.header)
    for rec in reader.records:
        out.write_record(rec)
    out.finish(sync=False)
    assert (tmp_path / "again" / "records.img").read_bytes() == (tmp_path / "img" / "records.img").read_bytes()
    assert ImageReader(tmp_path / "again").records == reader.records


def test_the_kept_copy_buffer_is_not_copied_into_a_restored_task(spawn, ctarget, tmp_path):
    """PageCopier keeps one copy buffer between dumps; a restore's new task starts as a
    copy of pyckpt, and the buffer must not be part of that copy (MADV_WIPEONFORK)."""
    from pyckpt._native._ck import ffi
    from pyckpt.kinds import memory

    t = start_ctarget(spawn, ctarget, tmp_path)
    pyckpt.dump(t.pid, tmp_path / "img")
    assert memory._SPARE, "no copy buffer kept after a dump"
    addr = int(ffi.cast("uintptr_t", memory._SPARE[0][0]))
    with open("/proc/self/smaps") as f:
        smaps = f.read()
    for m in re.finditer(r"^([0-9a-f]+)-([0-9a-f]+) .*?^VmFlags:([^\n]*)$", smaps, re.M | re.S):
        if int(m.group(1), 16) <= addr < int(m.group(2), 16):
            assert " wf" in m.group(3), m.group(3)
            break
    else:
        raise AssertionError(f"the copy buffer at {addr:#x} is in no mapping of pyckpt")


def test_a_value_json_cannot_take_is_refused_and_the_next_record_encodes():
    """The writer's one encoder (image._record_json) refuses what json.dumps refuses, and
    a refusal half-way through a record leaves nothing behind for the next one."""
    from pyckpt.kinds.fileid import FileIdentity

    good = FileIdentity("/a", 1, 2, 3, 4)
    bad = dataclasses.replace(good, path=[good, object()])  # a dataclass met, then garbage
    for _ in range(2):
        try:
            image_module._record_json(bad)
        except TypeError as e:
            assert "not JSON serializable" in str(e)
        else:
            raise AssertionError("an object() was encoded")
        again = dataclasses.replace(good, path=[good])  # the same dataclass, in a list again
        assert image_module._record_json(again) == json.dumps(_reference(again), sort_keys=True)


def test_a_record_holding_more_than_its_fields_encodes_its_fields():
    """The encoder takes a record's own __dict__ when that holds its fields alone; an
    attribute set beside them is not encoded."""
    from pyckpt.kinds.fileid import FileIdentity

    plain = FileIdentity("/a", 1, 2, 3, 4)
    want = json.dumps(_reference(plain), sort_keys=True)
    assert image_module._record_json(plain) == want
    extra = FileIdentity("/a", 1, 2, 3, 4)
    extra.cached = "not a field"
    assert image_module._record_json(extra) == want
