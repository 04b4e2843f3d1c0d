"""memfds: name, content, offsets, seals and sharing survive dump and restore."""

import json
import subprocess
import sys

import pytest

import pyckpt
from conftest import TARGETS, check, dump_kill_restore


def start(spawn, python_exe):
    t = spawn([python_exe, str(TARGETS / "del_memfd.py")], name="del-memfd")
    t.wait_for(r"^READY")
    check(t)
    return t


def test_memfds_survive_with_name_content_seals_and_sharing(spawn, python_exe, tmp_path):
    t = start(spawn, python_exe)
    img = tmp_path / "img"
    dump_kill_restore(spawn, t, img)
    check(t)
    check(t)

    image = pyckpt.open_image(img)
    memfds = [r for r in image.records if type(r).__name__ == "MemfdRecord"]
    assert sorted(m.name for m in memfds) == ["frozen", "maponly", "noexec", "plain", "pyckpt test memfd"]
    assert {m.name: m.allow_sealing for m in memfds} == {
        "frozen": False, "maponly": False, "noexec": True, "plain": False, "pyckpt test memfd": True}
    show = json.loads(subprocess.run([sys.executable, "-m", "pyckpt", "show", "--json", str(img)],
                                     check=True, capture_output=True, text=True).stdout)
    assert sum(f["kind"] == "memfd" for f in show["fds"]) == 5
    maps = sorted((v["name"], v["shared"], v["stored_bytes"]) for v in show["vmas"] if v["kind"] == "memfd")
    assert maps == [("/memfd:maponly (deleted)", True, 0),
                    ("/memfd:pyckpt test memfd (deleted)", False, 4096),
                    ("/memfd:pyckpt test memfd (deleted)", True, 0)]


def test_memfd_over_the_size_limit_is_refused(spawn, python_exe, tmp_path):
    t = start(spawn, python_exe)
    with pytest.raises(pyckpt.UnsupportedError, match=r"memfd.*20000 bytes.*max_deleted_size"):
        pyckpt.dump(t.pid, tmp_path / "img", max_deleted_size=8192)
    check(t)
