"""Every record declares its scope (issue 10, item 2): "process" (one process's own
state, in its part of the image) or "image" (one shared object, saved once by its
first holder, referred to by id).  Mixing them is an error of the API; an image
that puts a shared object twice, or a process's record under no process, is an
ImageError before anything is made.
"""

from __future__ import annotations

import pytest

import pyckpt
from conftest import TARGETS
from pyckpt.image.codec import RECORD_TYPES
from pyckpt.kinds import load_all
from test_image_format import _parse, _seal
from test_trees import trees  # noqa: F401 -- the fixture


@pytest.fixture
def tree_image(trees, spawn, python_exe, tmp_path):
    t = spawn([python_exe, str(TARGETS / "pidfds.py")], name="pidfds")
    a, b = map(int, t.wait_for(r"^READY a=(\d+) b=(\d+)$").groups())
    trees.adopt(t.pid, a, b)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)
    return img


def test_every_record_type_declares_its_scope():
    load_all()
    for type_id, cls in RECORD_TYPES.items():
        assert cls.SCOPE in ("process", "image"), (type_id, cls)
    with pytest.raises(RuntimeError, match="scope must be one of"):
        pyckpt.image.record(9999, scope="thread")


def test_the_whole_image_of_a_tree_does_not_mix_processes(tree_image):
    from pyckpt.image import ImageReader
    from pyckpt.kinds import files, task

    reader = ImageReader(tree_image)
    with pytest.raises(TypeError, match=r"of_type\(FdRecord\) on an image of 3 processes mixes"):
        reader.of_type(files.FdRecord)
    views = task.process_views(reader)
    own = [len(v.of_type(files.FdRecord)) for v in views]
    assert sum(own) == len(reader.all_of_type(files.FdRecord))
    # a shared object is the whole image's, seen alike from every process
    shared = [len(v.of_type(files.ExternalFileRecord)) for v in views]
    assert len(set(shared)) == 1


def _sections(records):
    """Indexes where each process's part begins."""
    start = next(t for t, c in RECORD_TYPES.items() if getattr(c, "STARTS_PROCESS", False))
    return [i for i, (t, _) in enumerate(records) if t == start]


def test_a_shared_object_saved_twice_is_an_image_error(tree_image):
    version, header, records = _parse((tree_image / "records.img").read_bytes())
    parts = _sections(records)
    i = next(i for i, (t, p) in enumerate(records)
             if t in RECORD_TYPES and RECORD_TYPES[t].SCOPE == "image" and "id" in p)
    name = RECORD_TYPES[records[i][0]].__name__
    # the same object again, in the last process's part
    twice = records[:-1] + [records[i]] + records[-1:]
    _seal(tree_image, version, header, twice)
    with pytest.raises(pyckpt.ImageError, match=rf"shared object {name} #{records[i][1]['id']} is saved "
                                                rf"twice \(in the parts of processes #1 and #{len(parts)}\)"):
        pyckpt.open_image(tree_image)
    # and twice in one process's part
    once_more = records[:i + 1] + [records[i]] + records[i + 1:]
    _seal(tree_image, version, header, once_more)
    with pytest.raises(pyckpt.ImageError, match=r"saved twice \(both in the part of one process\)"):
        pyckpt.open_image(tree_image)


def test_a_process_record_under_no_process_is_an_image_error(tree_image):
    version, header, records = _parse((tree_image / "records.img").read_bytes())
    parts = _sections(records)
    i = next(i for i, (t, _) in enumerate(records)
             if i > parts[0] and t in RECORD_TYPES and RECORD_TYPES[t].SCOPE == "process"
             and not getattr(RECORD_TYPES[t], "STARTS_PROCESS", False))
    moved = [records[i]] + records[:i] + records[i + 1:]
    _seal(tree_image, version, header, moved)
    with pytest.raises(pyckpt.ImageError, match=r"of no process \(before the first process begins\)"):
        pyckpt.open_image(tree_image)
