"""Task basics, minimum files and memory kinds, checked by the target itself after restore."""

import json
import os
import signal
import subprocess
import sys
import time

import pyckpt
from conftest import TARGETS

SPARSE = 64 << 20


def _check(t, after: int) -> str:
    os.kill(t.pid, signal.SIGUSR1)
    return t.wait_for(r"CHECK (ok|FAIL.*)", after=after).group(1)


def test_state_survives_dump_and_restore(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    t = spawn([python_exe, str(TARGETS / "statetarget.py"), str(work)])
    t.wait_for("READY")
    assert _check(t, 0) == "ok"
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    t.reap()

    # The image holds only the touched pages of the sparse region, and the
    # fds with their sharing.
    show = json.loads(subprocess.run([sys.executable, "-m", "pyckpt", "show", "--json", str(img)],
                                     check=True, capture_output=True, text=True).stdout)
    sparse = [v for v in show["vmas"] if v["end"] - v["start"] == SPARSE]
    assert len(sparse) == 1 and sparse[0]["stored_bytes"] == (SPARSE >> 20) * 4096
    shared_map = [v for v in show["vmas"] if v["name"].endswith("shared.map")]
    assert shared_map and shared_map[0]["shared"] and shared_map[0]["stored_bytes"] == 0
    fds = {f["fd"]: f for f in show["fds"]}
    data = [f for f in fds.values() if f["path"].endswith("data.bin") and f["shared_with"]]
    assert len(data) == 2, "the dup'ed fds must share one description"
    assert any(f["kind"] == "chardev" and f["path"] == "/dev/null" for f in fds.values())

    n_lines = len(t.lines())
    restored = pyckpt.restore(img)
    spawn.track(restored.pid)
    assert restored.pid == t.pid
    assert restored.name() == "state-target"
    assert _check(t, n_lines) == "ok"


def test_image_and_target_survive_a_second_round(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    t = spawn([python_exe, str(TARGETS / "statetarget.py"), str(work)])
    t.wait_for("READY")
    for round_ in range(2):
        img = tmp_path / f"img{round_}"
        pyckpt.dump(t.pid, img, kill=True)
        t.reap() if round_ == 0 else os.waitpid(t.pid, 0)
        n_lines = len(t.lines())
        restored = pyckpt.restore(img)
        spawn.track(restored.pid)
        assert _check(t, n_lines) == "ok"
        time.sleep(0.05)


CHROOTED = r"""
import os, sys, time
root = sys.argv[1]
os.chroot(root)
os.chdir("/sub")
print("READY", flush=True)
while True:
    time.sleep(0.02)
    if os.path.exists("/sub/ask"):
        os.unlink("/sub/ask")
        ok = os.getcwd() == "/sub" and os.listdir("/") == ["sub"]
        print("CHECK ok" if ok else f"CHECK FAIL cwd={os.getcwd()} root={os.listdir('/')}", flush=True)
"""


def test_chroot_and_cwd_inside_it(spawn, python_exe, tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    t = spawn([python_exe, "-c", CHROOTED, str(root)])
    t.wait_for("READY")
    pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    t.reap()
    n = len(t.lines())
    restored = pyckpt.restore(tmp_path / "img")
    spawn.track(restored.pid)
    assert os.readlink(f"/proc/{t.pid}/root") == str(root)
    (root / "sub" / "ask").touch()
    assert t.wait_for(r"CHECK (ok|FAIL.*)", after=n).group(1) == "ok"
