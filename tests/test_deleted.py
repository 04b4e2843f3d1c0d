"""Deleted-but-open files: content in the image, saved once, re-created and unlinked again."""

import json
import os
import subprocess
import sys

import psutil
import pytest

import pyckpt
from conftest import TARGETS, check, reap_dumped

def start(spawn, python_exe, work, *extra):
    work.mkdir(exist_ok=True)
    t = spawn([python_exe, str(TARGETS / "del_files.py"), str(work), *map(str, extra)],
              name="del-files")
    t.wait_for(r"^READY")
    check(t)
    return t


def links(t, after: int) -> dict[str, str]:
    out = {}
    for line in t.lines()[after:]:
        if line.startswith("LINK "):
            _, name, link = line.split(" ", 2)
            out[name] = link
    return out


def test_deleted_files_come_back_deleted_with_content_offsets_and_sharing(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    t = start(spawn, python_exe, work)
    img = tmp_path / "img"
    image = pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)

    # One content record per file, although victim.txt had four fds and three
    # descriptions, and mapped.bin two mappings.
    kinds = [type(r).__name__ for r in image.records]
    assert kinds.count("DeletedContentRecord") == 3
    assert kinds.count("DeletedFileRecord") == 4
    show = json.loads(subprocess.run([sys.executable, "-m", "pyckpt", "show", "--json", str(img)],
                                     check=True, capture_output=True, text=True).stdout)
    assert sum(f["kind"] == "deleted" for f in show["fds"]) == 5
    mapped = [v for v in show["vmas"] if v["name"] == f"{work}/mapped.bin (deleted)"]
    assert sorted((v["kind"], v["shared"], v["stored_bytes"]) for v in mapped) == [
        ("deleted", False, 4096), ("deleted", True, 0)]
    subprocess.run([sys.executable, "-m", "pyckpt", "check", str(img)], check=True,
                   capture_output=True)

    assert sorted(os.listdir(work)) == ["keep.txt", "sub"]
    n = len(t.lines())
    proc = pyckpt.restore(img)
    spawn.track(proc.pid)
    assert proc.pid == t.pid
    t.popen = None
    check(t)
    got = links(t, n)
    assert got["victim"] == f"{work}/victim.txt (deleted)"
    assert got["other"] == f"{work}/sub/other.bin (deleted)"
    assert got["mapped"] == f"{work}/mapped.bin (deleted)"
    # Nothing was left behind in the directories.
    assert sorted(os.listdir(work)) == ["keep.txt", "sub"]
    assert os.listdir(work / "sub") == []
    check(t)  # a second round of checks: the state the first one left is still right


def test_original_name_taken_gives_a_hidden_name_in_the_same_directory(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    t = start(spawn, python_exe, work)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    (work / "victim.txt").write_text("a new file with the old name\n")
    n = len(t.lines())
    proc = pyckpt.restore(img)
    spawn.track(proc.pid)
    t.popen = None
    check(t)
    link = links(t, n)["victim"]
    assert link.startswith(f"{work}/.victim.txt.pyckpt-") and link.endswith(" (deleted)")
    assert (work / "victim.txt").read_text() == "a new file with the old name\n"
    assert sorted(os.listdir(work)) == ["keep.txt", "sub", "victim.txt"]


def test_deleted_dir_and_missing_directory(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    t = start(spawn, python_exe, work)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    os.rmdir(work / "sub")

    # Where sub/other.bin lived is gone: restore says so, and leaves nothing.
    with pytest.raises(pyckpt.FileChangedError) as ei:
        pyckpt.restore(img)
    msg = str(ei.value)
    assert "sub/other.bin" in msg and "deleted_dir" in msg
    assert not psutil.pid_exists(t.pid)
    assert sorted(os.listdir(work)) == ["keep.txt"]  # victim.txt was re-created and is gone again

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    n = len(t.lines())
    proc = pyckpt.restore(img, deleted_dir=elsewhere)
    spawn.track(proc.pid)
    t.popen = None
    check(t)
    got = links(t, n)
    assert got["victim"] == f"{elsewhere}/victim.txt (deleted)"
    assert got["other"] == f"{elsewhere}/other.bin (deleted)"
    assert got["mapped"] == f"{elsewhere}/mapped.bin (deleted)"
    assert os.listdir(elsewhere) == []


def test_failed_restore_leaves_no_temporary_file(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    t = start(spawn, python_exe, work)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    # keep.txt (opened after the deleted files) changed: restore fails after
    # the deleted files were re-created.
    with open(work / "keep.txt", "a") as f:
        f.write("changed\n")
    with pytest.raises(pyckpt.FileChangedError, match="keep.txt"):
        pyckpt.restore(img)
    assert not psutil.pid_exists(t.pid)
    assert sorted(os.listdir(work)) == ["keep.txt", "sub"]
    assert os.listdir(work / "sub") == []


def test_deleted_file_over_the_limit_is_refused_and_the_target_runs_on(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    size = 3 << 20
    t = start(spawn, python_exe, work, size)
    with pytest.raises(pyckpt.UnsupportedError) as ei:
        pyckpt.dump(t.pid, tmp_path / "img", max_deleted_size=1 << 20)
    msg = str(ei.value)
    assert "fd " in msg and f"{work}/big.bin (deleted)" in msg and str(size) in msg
    assert "max_deleted_size" in msg and "--max-deleted-size" in msg
    check(t)

    # The command line: same refusal, exit code 5; with the limit raised it works.
    r = subprocess.run([sys.executable, "-m", "pyckpt", "--no-progress", "dump", str(t.pid),
                        str(tmp_path / "img2"), "--max-deleted-size", str(1 << 20)],
                       capture_output=True, text=True)
    assert r.returncode == 5 and "big.bin" in r.stderr and "--max-deleted-size" in r.stderr
    check(t)
    r = subprocess.run([sys.executable, "-m", "pyckpt", "--no-progress", "dump", str(t.pid),
                        str(tmp_path / "img3"), "--max-deleted-size", str(size), "--kill"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    reap_dumped(t)
    proc = pyckpt.restore(tmp_path / "img3")
    spawn.track(proc.pid)
    t.popen = None
    check(t)


TMPFILE_TARGET = r"""
import os, sys, tempfile, selfcheck
t = tempfile.TemporaryFile(dir=sys.argv[1])  # O_TMPFILE: no name, ever
t.write(b"scratch data")
t.flush()
t.seek(3)
flags = int(open(f"/proc/self/fdinfo/{t.fileno()}").read().split("flags:")[1].split()[0], 8)
def check():
    ok = (os.pread(t.fileno(), 100, 0) == b"scratch data" and t.tell() == 3
          and os.fstat(t.fileno()).st_nlink == 0)
    return [] if ok else ["the TemporaryFile lost its content, offset or namelessness"]
selfcheck.listen()
print("READY", oct(flags), flush=True)
selfcheck.serve(check)
"""


def test_tempfile_opened_with_o_tmpfile_comes_back(spawn, python_exe, tmp_path):
    """Python's tempfile.TemporaryFile opens with O_TMPFILE, whose O_DIRECTORY part
    must not be replayed when the file is opened again."""
    from conftest import dump_kill_restore

    t = spawn([python_exe, "-c", TMPFILE_TARGET, str(tmp_path)], name="tmpfile")
    flags = int(t.wait_for(r"^READY (0o\d+)$").group(1), 8)
    assert flags & os.O_TMPFILE == os.O_TMPFILE  # the kernel reports it
    check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    check(t)
