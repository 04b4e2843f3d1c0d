"""Images written by earlier pyckpts (issue 10, item 5; the policy is docs/image-format.md).

tests/images/format2-tiny was written by pyckpt 0.1.0 at format version 2 (a
libc-free static process, tests/images/format2-tiny.c).  The current reader
must read it, or — once FORMAT_VERSION has moved — refuse it naming both
versions.  At format 3 (memory areas, page runs and file identities written as
arrays) the reader still reads version 2: its records as objects.  Copies of it, re-sealed (records.img rewritten with valid checksums
and COMPLETE digest), show what the reader does with an image of another
version, a field it does not know, a field that has a default, a record type
it does not know.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import xxhash

import pyckpt
from pyckpt.image import FORMAT_VERSION, MAGIC, READ_VERSIONS

IMAGES = Path(__file__).parent / "images"
FIXTURE = IMAGES / "format2-tiny"
FIXTURE_VERSION = 2


def _copy(tmp_path: Path) -> Path:
    img = tmp_path / "img"
    shutil.copytree(FIXTURE, img)
    img.chmod(0o700)
    return img


def _parse(data: bytes):
    """(version, header json, [(type, payload json)]) of a records.img, trusting it."""
    version, hlen = struct.unpack_from("<II", data, len(MAGIC))
    pos = len(MAGIC) + 8
    header = json.loads(data[pos:pos + hlen])
    pos += hlen + 8
    records = []
    while pos < len(data):
        t, _, n = struct.unpack_from("<HHI", data, pos)
        records.append((t, json.loads(data[pos + 8:pos + 8 + n])))
        pos += 8 + n + 8
    return version, header, records


def _seal(img: Path, version: int, header: dict, records: list) -> None:
    """Write records.img as pyckpt does (checksums, end record's count) and COMPLETE's digest."""
    end = 0xFFFF
    records = [(t, p) for t, p in records if t != end] + [(end, {"records": sum(t != end for t, _ in records)})]
    body = json.dumps(header).encode()
    out = MAGIC + struct.pack("<II", version, len(body)) + body + struct.pack("<Q", xxhash.xxh3_64_intdigest(body))
    for t, payload in records:
        p = json.dumps(payload).encode()
        head = struct.pack("<HHI", t, 0, len(p))
        out += head + p + struct.pack("<Q", xxhash.xxh3_64_intdigest(head + p))
    (img / "records.img").write_bytes(out)
    complete = json.loads((img / "COMPLETE").read_text())
    complete["records_xxh3"] = xxhash.xxh3_64_intdigest(out)
    (img / "COMPLETE").write_text(json.dumps(complete))


def test_the_committed_image_is_read_or_refused_naming_both_versions():
    version, header, records = _parse((FIXTURE / "records.img").read_bytes())
    assert version == FIXTURE_VERSION and header["pyckpt_version"] == "0.1.0"
    if FIXTURE_VERSION not in READ_VERSIONS:  # the format moved past it: refused by name
        with pytest.raises(pyckpt.ImageError) as e:
            pyckpt.open_image(FIXTURE)
        assert f"format version {FIXTURE_VERSION}" in str(e.value) and f"{FORMAT_VERSION}" in str(e.value)
        return
    assert FORMAT_VERSION == 3 and READ_VERSIONS == (2, 3)  # (read: the rest of the test)
    image = pyckpt.open_image(FIXTURE)
    image.verify()
    s = image.summary()
    assert [p["pid"] for p in s["processes"]] == [header["root_pid"]]
    assert s["header"]["comm"] == "pyckpt-format-f"
    r = subprocess.run([sys.executable, "-m", "pyckpt", "show", "--json", str(FIXTURE)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["processes"][0]["pid"] == header["root_pid"]
    r = subprocess.run([sys.executable, "-m", "pyckpt", "check", str(FIXTURE)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_the_reseal_helper_makes_an_image_the_reader_takes(tmp_path):
    img = _copy(tmp_path)
    _seal(img, *_parse((img / "records.img").read_bytes()))
    pyckpt.open_image(img)  # else the refusals below would prove nothing


@pytest.mark.parametrize("version", [min(READ_VERSIONS) - 1, FORMAT_VERSION + 1])
def test_another_version_is_refused_naming_both(tmp_path, version):
    img = _copy(tmp_path)
    _, header, records = _parse((img / "records.img").read_bytes())
    _seal(img, version, header, records)
    with pytest.raises(pyckpt.ImageError, match=rf"format version {version}; this pyckpt reads "
                                                rf"versions 2 and {FORMAT_VERSION}") as e:
        pyckpt.open_image(img)
    assert e.value.path == str(img)


def test_a_version_2_image_and_its_version_3_form_read_alike(tmp_path):
    """The committed image's records, objects at format 2, written again at format 3 with
    its memory areas, page runs and file identities as arrays (as a dump writes them
    now), decode to the same records; an array of the wrong length is refused."""
    from pyckpt.image import ImageReader

    img = _copy(tmp_path)
    version, header, records = _parse((img / "records.img").read_bytes())
    before = ImageReader(img).records

    def arrays(value, cls):
        from pyckpt.image import codec

        if not (isinstance(value, dict) and codec._is_compact(cls)):
            return value
        hints, names, _ = codec._fields_of(cls)
        out = []
        for n in names:
            if n not in value:  # (a field added since, with a default: trailing, left out)
                break
            v, tp = value[n], hints[n]
            inner = [a for a in getattr(tp, "__args__", ()) if a is not type(None)]
            if isinstance(v, dict) and inner:
                v = arrays(v, inner[0])
            elif isinstance(v, list) and inner and isinstance(inner[0], type):
                v = [arrays(x, inner[0]) for x in v]
            out.append(v)
        return out

    from pyckpt.image import codec

    compacted = [(t, arrays(p, codec.record_type(t))) if codec.record_type(t) else (t, p) for t, p in records]
    assert any(isinstance(p, list) for _, p in compacted), "no record of the fixture is compact"
    _seal(img, FORMAT_VERSION, header, compacted)
    assert ImageReader(img).records == before
    t, p = next((t, p) for t, p in compacted if isinstance(p, list))
    _seal(img, FORMAT_VERSION, header, [(t, p + [1])] + [r for r in compacted if r[1] is not p])
    with pytest.raises(pyckpt.ImageError, match=r"expected a list of \d+ values"):
        ImageReader(img)


def test_a_missing_field_that_has_a_default_takes_it():
    """What a record written before a defaulted field was added decodes to."""
    from dataclasses import dataclass, field

    from pyckpt.image.codec import decode

    @dataclass
    class Grown:
        pid: int
        queued: int = 0  # added later, with a default
        names: list[str] = field(default_factory=list)

    assert decode(Grown, {"pid": 5}) == Grown(5, 0, [])
    assert decode(Grown, {"pid": 5, "queued": 3, "names": ["a"]}) == Grown(5, 3, ["a"])
    with pytest.raises(pyckpt.ImageError, match=r"missing \['pid'\]"):
        decode(Grown, {"queued": 3})


def test_an_unknown_field_or_record_type_names_the_writer(tmp_path):
    img = _copy(tmp_path)
    version, header, records = _parse((img / "records.img").read_bytes())
    header["pyckpt_version"] = "9.0.0"
    t, payload = records[0]
    _seal(img, version, header, [(t, dict(payload, added_in_nine=1))] + records[1:])
    with pytest.raises(pyckpt.ImageError, match=r"unknown \['added_in_nine'\].*written by pyckpt 9\.0\.0; "
                                                rf"this is pyckpt {pyckpt.__version__}"):
        pyckpt.open_image(img)
    _seal(img, version, header, records[:1] + [(999, {"x": 1})] + records[1:])
    with pytest.raises(pyckpt.ImageError, match=r"unknown type 999 \(the image was written by pyckpt 9\.0\.0"):
        pyckpt.open_image(img)
    # a required field missing is damage, whoever wrote it
    header["pyckpt_version"] = pyckpt.__version__
    _seal(img, version, header, [(t, {k: v for k, v in payload.items() if k != "pid"})] + records[1:])
    with pytest.raises(pyckpt.ImageError, match=r"missing \['pid'\]"):
        pyckpt.open_image(img)


def test_every_record_id_is_in_the_one_table_and_the_table_is_all_used():
    from pyckpt.image.codec import RECORD_TYPES
    from pyckpt.image.ids import RECORD_IDS, RETIRED
    from pyckpt.kinds import load_all

    load_all()
    registered = {i: f"{c.__module__.removeprefix('pyckpt.')}.{c.__qualname__}" for i, c in RECORD_TYPES.items()}
    assert registered == RECORD_IDS  # every listed id is a record class, and only those
    assert not set(RETIRED) & set(RECORD_IDS)
    with pytest.raises(RuntimeError, match=r"record id 99999 of .*Stray is not in image/ids.py \(free there\)"):
        from dataclasses import dataclass

        @pyckpt.image.record(99999, scope="image")
        @dataclass
        class Stray:
            id: int
