"""Incremental images: `dump(..., parent=DIR)` stores only the pages of the 256 KiB
pieces that changed since the parent; any point of a chain restores (the target checks its
own memory and says which generation it holds); a parent that is missing,
swapped, changed or reached through a symbolic link is refused before any
process is made."""

import os
import shutil
import signal
import subprocess
import sys

import psutil
import pytest

import pyckpt
from conftest import TARGETS, check, kill_own, reap_dumped
from pyckpt.errors import ImageError

TARGET = str(TARGETS / "chain_target.py")


def _advance(t) -> None:
    after = len(t.lines())
    os.kill(t.pid, signal.SIGUSR2)
    t.wait_for(r"^GEN \d+$", after=after)


def _restore_and_check(spawn, t, image, gen: int) -> None:
    log = image.with_name(f"{image.name}-restored.log")  # the log went on after the dump
    log.unlink(missing_ok=True)
    p = pyckpt.restore(image, fds={1: str(log)})
    spawn.track(p.pid)
    assert p.pid == t.pid
    t.popen, t.log = None, log
    after = len(t.lines())
    check(t)
    assert t.wait_for(r"^STATE gen=(\d+)$", after=after).group(1) == str(gen)
    kill_own(p.pid)  # the PID is free for the next point of the chain


def _pages(image) -> int:
    return (image / "pages.img").stat().st_size


@pytest.fixture
def chain(spawn, python_exe, tmp_path):
    """A target dumped three times with changes between: full, then two children (the
    last with kill).  Returns (target, [image dirs])."""
    t = spawn([python_exe, TARGET], name="chain")
    t.wait_for("^READY")
    imgs = [tmp_path / "gen0", tmp_path / "gen1", tmp_path / "gen2"]
    pyckpt.dump(t.pid, imgs[0])
    _advance(t)
    pyckpt.dump(t.pid, imgs[1], parent=imgs[0])
    _advance(t)
    pyckpt.dump(t.pid, imgs[2], parent=imgs[1], kill=True)
    reap_dumped(t)
    return t, imgs


def test_each_point_of_a_chain_restores_as_it_was(spawn, chain):
    t, imgs = chain
    full = _pages(imgs[0])
    for child in imgs[1:]:  # a few pieces changed of ~70 MiB: stored by a wide margin less
        assert _pages(child) * 5 < full, (_pages(child), full)
    info = pyckpt.open_image(imgs[2]).summary()
    assert info["parent"]["path"] == "../gen1" and info["parent"]["depth"] == 2
    assert info["inherited_bytes"] > 10 * sum(p["pages_bytes"] for p in info["processes"])
    for gen in (2, 1, 0):  # newest first: the grandchild reads from all three images
        _restore_and_check(spawn, t, imgs[gen], gen)


def test_a_piece_changed_in_a_few_pages_stores_only_those(spawn, chain):
    """A piece of 256 KiB of which a page or two changed since the parent: only those
    pages are stored, the rest of the piece is kept in the parent (or further up, where
    the parent kept it) as runs of their own, and each point restores as it was."""
    from pyckpt.kinds.memory import PIECE, VmaRecord

    t, imgs = chain
    data = int(next(line for line in t.lines() if line.startswith("READY")).split()[1][5:], 16)

    def runs(image, piece):  # (page in the piece, pages, image up the chain) of its runs
        start, end = data + piece * PIECE, data + (piece + 1) * PIECE
        recs = pyckpt.open_image(image).records
        return [((max(p.addr, start) - start) // 4096,
                 (min(p.addr + p.npages * 4096, end) - max(p.addr, start)) // 4096, p.image)
                for v in recs if isinstance(v, VmaRecord) and v.start <= start < v.end
                for p in v.pages if p.addr < end and p.addr + p.npages * 4096 > start]

    # gen1 rewrote pages 10-11 of piece 40 and page 0 of piece 41
    assert runs(imgs[1], 40) == [(0, 10, 1), (10, 2, 0), (12, 52, 1)]
    assert runs(imgs[1], 41) == [(0, 1, 0), (1, 63, 1)]
    # gen2 rewrote page 30 of piece 40: the pages gen1 stored are kept there now
    assert runs(imgs[2], 40) == [(0, 10, 2), (10, 2, 1), (12, 18, 2), (30, 1, 0), (31, 33, 2)]
    assert runs(imgs[2], 41) == [(0, 1, 1), (1, 63, 2)]  # unchanged: where gen1 kept it
    for gen in (2, 1):
        _restore_and_check(spawn, t, imgs[gen], gen)


def test_precopy_incremental_dump(spawn, python_exe, tmp_path):
    t = spawn([python_exe, TARGET], name="chain")
    t.wait_for("^READY")
    pyckpt.dump(t.pid, tmp_path / "a", precopy=True)
    _advance(t)
    image = pyckpt.dump(t.pid, tmp_path / "b", parent=tmp_path / "a", precopy=True, kill=True)
    assert image.dump_stats.precopy_reused > 0
    assert _pages(tmp_path / "b") * 5 < _pages(tmp_path / "a")
    reap_dumped(t)
    _restore_and_check(spawn, t, tmp_path / "b", 1)


def test_cli_parent_and_show(spawn, python_exe, tmp_path):
    t = spawn([python_exe, TARGET], name="chain")
    t.wait_for("^READY")
    pyckpt.dump(t.pid, tmp_path / "a")
    _advance(t)
    r = subprocess.run([sys.executable, "-m", "pyckpt", "dump", "--parent", str(tmp_path / "a"), "--kill",
                        str(t.pid), str(tmp_path / "b")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    reap_dumped(t)
    r = subprocess.run([sys.executable, "-m", "pyckpt", "show", str(tmp_path / "b")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"parent image {tmp_path / 'a'} (written as ../a" in r.stdout
    assert "MiB kept in the parent images" in r.stdout
    _restore_and_check(spawn, t, tmp_path / "b", 1)


def _refused(spawn, t, image, *words) -> None:
    """Restore (and check) of `image` raise ImageError naming `words`; no process made."""
    with pytest.raises(ImageError) as e:
        pyckpt.restore(image)
    for w in words:
        assert str(w) in str(e.value), str(e.value)
    assert not psutil.pid_exists(t.pid)
    with pytest.raises(ImageError):
        pyckpt.open_image(image).verify()


def test_missing_parent(spawn, chain):
    t, imgs = chain
    os.rename(imgs[0], imgs[0].with_name("moved"))
    _refused(spawn, t, imgs[2], imgs[0], "is missing", "put the parent image back")
    os.rename(imgs[0].with_name("moved"), imgs[0])
    _restore_and_check(spawn, t, imgs[2], 2)


def test_swapped_parent(spawn, python_exe, chain, tmp_path):
    t, imgs = chain
    other = spawn([python_exe, TARGET], name="other")
    other.wait_for("^READY")
    pyckpt.dump(other.pid, tmp_path / "other")
    shutil.rmtree(imgs[1])
    os.rename(tmp_path / "other", imgs[1])
    _refused(spawn, t, imgs[2], imgs[2], imgs[1], "not the parent it was dumped against")


def test_changed_parent_pages(spawn, chain):
    t, imgs = chain
    from pyckpt.kinds.memory import VmaRecord

    runs = [p for r in pyckpt.open_image(imgs[2]).records if isinstance(r, VmaRecord)
            for p in r.pages if p.image == 2]  # kept two images up: in gen0
    assert runs
    with open(imgs[0] / "pages.img", "r+b") as f:
        f.seek(runs[-1].offset + 100)
        b = f.read(1)
        f.seek(runs[-1].offset + 100)
        f.write(bytes([b[0] ^ 0xFF]))
    _refused(spawn, t, imgs[2], imgs[0], "checksum")


def test_parent_through_a_symlink_is_not_followed(spawn, chain, tmp_path):
    t, imgs = chain
    os.rename(imgs[1], tmp_path / "real")
    os.symlink(tmp_path / "real", imgs[1])
    _refused(spawn, t, imgs[2], "symbolic link")


def test_a_bad_parent_is_refused_before_the_dump_touches_anything(spawn, python_exe, tmp_path):
    t = spawn([python_exe, TARGET], name="chain")
    t.wait_for("^READY")
    with pytest.raises(ImageError) as e:
        pyckpt.dump(t.pid, tmp_path / "b", parent=tmp_path / "nothing")
    assert str(tmp_path / "nothing") in str(e.value)
    assert not (tmp_path / "b").exists()
    check(t)


def test_parent_of_another_owner_is_refused(spawn, chain):
    """A restore reads a parent's pages into the process: an image may not name another
    user's image as its parent (a user's image restores as that user, see trust.py)."""
    t, imgs = chain
    os.chown(imgs[1], 65534, 65534)
    _refused(spawn, t, imgs[2], imgs[1], "belongs to uid 65534")
    os.chown(imgs[1], 0, 0)
    os.chown(imgs[1] / "pages.img", 65534, 65534)
    _refused(spawn, t, imgs[2], "pages.img of its parent image", "belongs to uid 65534")


def _forge(src, dst, edit):
    """A copy of the image at `src` with each record replaced by `edit(record)`, re-signed
    as pyckpt writes images (anyone who can write the directory can do this)."""
    from pyckpt.image import ImageWriter

    image = pyckpt.open_image(src)
    writer = ImageWriter(dst)
    writer.write_header(image.header)
    for rec in image.records:
        writer.write_record(edit(rec))
    writer.pages.append((src / "pages.img").read_bytes())
    writer.finish(sync=False)
    return dst


def test_cycle_and_bad_chain_records_are_refused(spawn, chain, tmp_path):
    import dataclasses

    from pyckpt.image.chain import ParentRecord

    t, imgs = chain
    cases = {  # ParentRecord edit -> what the refusal says
        "cycle": (lambda r: dataclasses.replace(r, path="../cycle"), "a cycle"),
        "absolute": (lambda r: dataclasses.replace(r, path=str(imgs[1])), "not a path relative"),
        "deep": (lambda r: dataclasses.replace(r, depth=1000), "longer than"),
        "depth": (lambda r: dataclasses.replace(r, depth=1), "images up a chain of 1"),
    }
    for name, (edit, words) in cases.items():
        forged = _forge(imgs[2], tmp_path / name, lambda r: edit(r) if isinstance(r, ParentRecord) else r)
        _refused(spawn, t, forged, words)


def test_a_chain_moved_as_a_whole_restores(spawn, chain, tmp_path):
    t, imgs = chain
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    moved = [tmp_path / "elsewhere" / i.name for i in imgs]
    for a, b in zip(imgs, moved):
        os.rename(a, b)
    _restore_and_check(spawn, t, moved[2], 2)
