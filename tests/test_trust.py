"""An image directory owned by an ordinary user restores only with what that user has
(its ids, no capabilities, files it may open, no set-user-ID root files...) unless the
caller passes trust_image=True / --trust-image; `check --restore` lists the refusal with
that fix.  Root's own images are restored as before (the rest of the suite).

The images are made by root (the only one who can dump) from processes of uid 65534 and
then given to that user (chown -R), as if the user had written them; the forged ones are
rewritten record by record, as anyone could."""

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

import pyckpt
from conftest import NOBODY, drop_to_nobody
from pyckpt.problems import Fix

CLI = [sys.executable, "-m", "pyckpt"]


@pytest.fixture
def pub():
    """A directory of uid 65534's that it can reach (pytest's tmp_path is root's, 0700)."""
    d = Path(tempfile.mkdtemp(prefix="pyckpt-trust-"))
    os.chmod(d, 0o755)
    os.chown(d, NOBODY, NOBODY)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start(spawn, pub: Path, script: str, *, as_nobody: bool = True, stdin=None) -> int:
    """`sh -c script` (ending in `exec sleep 600`) with its output in a file of uid 65534's
    in `pub`; returns its PID once it sleeps.  Registered with `spawn` for the cleanup."""
    log = pub / f"log-{time.monotonic_ns()}"
    log.touch()
    os.chown(log, NOBODY, NOBODY)
    with open(log, "wb") as out, open(stdin or os.devnull, "rb") as inp:
        p = subprocess.Popen(["sh", "-c", script], cwd=pub, stdin=inp, stdout=out, stderr=out,
                             start_new_session=True, preexec_fn=drop_to_nobody if as_nobody else None)
    spawn.track(p.pid)
    deadline = time.monotonic() + 10
    while True:
        try:
            if (os.readlink(f"/proc/{p.pid}/exe").endswith("/sleep")
                    and psutil.Process(p.pid).status() == psutil.STATUS_SLEEPING and "READY" in log.read_text()):
                return p.pid
        except (OSError, psutil.Error):
            pass
        assert time.monotonic() < deadline, f"target {p.pid} did not start: {log.read_text()}"
        time.sleep(0.01)


def dump_and_give(pid: int, image: Path, owner: int = NOBODY) -> Path:
    """Dump `pid` (killed, reaped: its PID free), then hand the image to `owner`."""
    pyckpt.dump(pid, image, kill=True, progress=False)
    os.waitpid(pid, 0)
    give(image, owner)
    return image


def give(image: Path, owner: int) -> None:
    for p in [image, *image.iterdir()]:
        os.chown(p, owner, owner)


def forge(src: Path, dst: Path, edit) -> Path:
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
    give(dst, NOBODY)
    return dst


def identity(pid: int) -> tuple:
    p = psutil.Process(pid)
    with open(f"/proc/{pid}/status") as f:
        cap_eff = [line.split()[1] for line in f if line.startswith("CapEff:")][0]
    return tuple(p.uids()), tuple(p.gids()), int(cap_eff, 16)


def restored(spawn, proc) -> int:
    spawn.track(proc.pid)
    assert psutil.Process(proc.pid).status() in (psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING)
    return proc.pid


def test_a_user_s_own_image_restores_as_that_user(spawn, pub, tmp_path):
    pid = start(spawn, pub, "echo READY; exec sleep 600")
    image = dump_and_give(pid, tmp_path / "img")
    assert pyckpt.open_image(image).check_restore() == []
    back = restored(spawn, pyckpt.restore(image, progress=False))
    assert back == pid
    assert identity(back) == ((NOBODY,) * 3, (NOBODY,) * 3, 0)


def test_root_s_process_in_a_user_s_image_is_refused_unless_trusted(spawn, pub, tmp_path):
    pid = start(spawn, pub, "echo READY; exec sleep 600", as_nobody=False)
    image = dump_and_give(pid, tmp_path / "img")
    with pytest.raises(pyckpt.UntrustedImageError) as ei:
        pyckpt.restore(image, progress=False)
    e = ei.value
    assert e.exit_code == 17 and e.owner == NOBODY and e.path == str(image)
    assert f"process {pid} with uid 0 (root, with every capability)" in e.wants, e.wants
    assert f"gid 0, not a group of uid {NOBODY}" in e.wants, e.wants
    assert "owned by uid 65534 (nobody)" in str(e) and "--trust-image" in str(e) and "trust_image=True" in str(e)
    assert not os.path.exists(f"/proc/{pid}"), "a refused restore made a process"

    problems = pyckpt.open_image(image).check_restore()
    assert [type(p.error) for p in problems] == [pyckpt.UntrustedImageError]
    assert problems[0].fixes == (Fix("trust_image"),)
    r = subprocess.run(CLI + ["check", "--restore", str(image)], capture_output=True, text=True)
    assert r.returncode == 17, r.stdout + r.stderr
    assert "[fix: --trust-image]" in r.stdout and "restorable with: --trust-image" in r.stdout, r.stdout
    r = subprocess.run(CLI + ["check", "--restore", "--trust-image", str(image)], capture_output=True, text=True)
    assert r.returncode == 0 and "restore with --trust-image gets past every check" in r.stdout, r.stdout

    r = subprocess.run(CLI + ["restore", str(image)], capture_output=True, text=True)
    assert r.returncode == 17 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    back = restored(spawn, pyckpt.restore(image, trust_image=True, progress=False))
    assert back == pid and identity(back)[0] == (0, 0, 0)


def test_a_file_the_user_cannot_open_is_refused_and_a_replacement_avoids_it(spawn, pub, tmp_path):
    """uid 65534's process holds a root-only file its root parent gave it (stdin): a
    restore of its image as that user could not open it — refused, naming the file; the
    caller's own replacement (fds=) is not the image's and is accepted."""
    secret = pub / "secret"
    secret.write_text("root only\n")
    os.chmod(secret, 0o600)
    pid = start(spawn, pub, "echo READY; exec sleep 600", stdin=secret)
    image = dump_and_give(pid, tmp_path / "img")
    with pytest.raises(pyckpt.UntrustedImageError) as ei:
        pyckpt.restore(image, progress=False)
    assert f"{secret} opened for reading, which uid 65534 (nobody) cannot (Permission denied)" in ei.value.wants
    assert not os.path.exists(f"/proc/{pid}")
    back = restored(spawn, pyckpt.restore(image, fds={0: os.devnull}, progress=False))
    assert os.readlink(f"/proc/{back}/fd/0") == os.devnull
    assert identity(back)[0] == (NOBODY,) * 3


def test_an_image_directory_others_can_write_is_nobody_s(spawn, pub, tmp_path):
    pid = start(spawn, pub, "echo READY; exec sleep 600")
    image = dump_and_give(pid, tmp_path / "img", owner=0)
    assert pyckpt.open_image(image).check_restore() == []  # root's: trusted
    os.chmod(image, 0o777)
    problems = pyckpt.open_image(image).check_restore()
    assert problems and all(isinstance(p.error, pyckpt.UntrustedImageError) for p in problems)
    e = problems[0].error
    assert e.owner is None and "writable by others, mode 0777" in str(e) and "uids 65534/" in e.wants, str(e)
    os.chmod(image, 0o700)
    assert pyckpt.open_image(image).check_restore() == []


def test_forged_files_and_set_user_id_files_are_refused(spawn, pub, tmp_path):
    """A forged image of uid 65534's: fd 0 made /etc/shadow (its identity is public:
    stat works for anyone), a deleted file made root's and set-user-ID.  Both are refused;
    trusted, the image is done as it says (which is why trust must be asked for)."""
    pid = start(spawn, pub, "exec 3<>deleted; rm deleted; echo READY; exec sleep 600")
    good = dump_and_give(pid, tmp_path / "good")
    from pyckpt.kinds.deleted import DeletedContentRecord
    from pyckpt.kinds.fileid import identify
    from pyckpt.kinds.regfile import FileRecord

    shadow = "/etc/shadow" if os.path.exists("/etc/shadow") else None
    if shadow is None:  # a root-only file of our own instead
        shadow = str(tmp_path / "shadow")
        Path(shadow).write_text("x")
        os.chmod(shadow, 0o600)
    assert not os.stat(shadow).st_mode & stat.S_IROTH

    def shadow_at_fd0(rec):
        if isinstance(rec, FileRecord) and rec.file.path == os.devnull:  # fd 0
            return dataclasses.replace(rec, kind="regular", flags=os.O_RDONLY, file=identify(shadow))
        return rec

    forged = forge(good, tmp_path / "forged-shadow", shadow_at_fd0)
    with pytest.raises(pyckpt.UntrustedImageError) as ei:
        pyckpt.restore(forged, progress=False)
    assert f"{shadow} opened for reading, which uid 65534 (nobody) cannot" in ei.value.wants
    back = restored(spawn, pyckpt.restore(forged, trust_image=True, progress=False))
    assert os.readlink(f"/proc/{back}/fd/0") == shadow  # trusted: done as the image says
    psutil.Process(back).kill()
    os.waitpid(back, 0)

    def setuid_root(rec):
        if isinstance(rec, DeletedContentRecord):
            return dataclasses.replace(rec, uid=0, mode=0o4755)
        return rec

    forged = forge(good, tmp_path / "forged-setuid", setuid_root)
    with pytest.raises(pyckpt.UntrustedImageError) as ei:
        pyckpt.restore(forged, progress=False)
    assert f"a deleted file {pub}/deleted owned by uid 0, gid 65534 (mode 4755)" in ei.value.wants
    assert not os.path.exists(f"/proc/{pid}")
    back = restored(spawn, pyckpt.restore(good, progress=False))  # the unforged one is fine
    assert identity(back)[0] == (NOBODY,) * 3
