"""A caller's low RLIMIT_NOFILE: a low soft limit just works (pyckpt raises its own soft
limit to the hard one for the length of the work and puts it back); running out all the
same is a ResourceError (exit 15) saying what ran out, never a damaged image (exit 6) or
a bare errno; an image fd above the hard limit is named with the limit."""

import errno
import gc
import os
import resource
import subprocess
import sys
import threading

import pytest

import pyckpt
from conftest import assert_running, error_in_child
from pyckpt import limits

CLI = [sys.executable, "-m", "pyckpt"]

# A target holding a file at fd 200 (and only 0-2 besides: Popen closes the rest).
FD200 = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
os.dup2(fd, 200)
os.close(fd)
os.write(200, b"fd 200 is mine\\n")
print("READY", flush=True)
while True:
    time.sleep(0.05)
"""


def nofile_limits(pid: int) -> tuple[str, str]:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return soft, hard
    raise AssertionError("no 'Max open files' line")


def fd200_image(spawn, python_exe, tmp_path, *, nofile=None):
    """(image of a killed target with fd 200, its PID, the file at fd 200); the PID is free.
    `nofile`: the target's own RLIMIT_NOFILE (soft, hard)."""
    data = tmp_path / "data.txt"
    kw = {}
    if nofile is not None:
        kw["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
    t = spawn([python_exe, "-c", FD200, str(data)], name="fd200", **kw)
    t.wait_for("^READY")
    image = tmp_path / "img"
    r = subprocess.run(CLI + ["dump", "--kill", str(t.pid), str(image)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    t.reap()
    assert not os.path.exists(f"/proc/{t.pid}")
    return image, t.pid, data


def _link(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


@pytest.fixture
def low_soft_limit():
    """This process's soft RLIMIT_NOFILE set to 64 for the test (hard unchanged), then back."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert old[1] > 300, "the test needs a hard limit above 300"
    # Room under 64 for the test's own files: fds that earlier tests left open in this
    # process (what only the garbage collector closes aside) are a leak, named here
    gc.collect()
    held = {fd: _link(fd) for fd in map(int, os.listdir("/proc/self/fd"))}
    assert len(held) < 40, f"pytest holds {len(held)} fds before this test (a leak?): {held}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, old[1]))
    try:
        yield 64, old[1]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def test_low_soft_limit_just_works_and_is_put_back(spawn, python_exe, tmp_path, low_soft_limit):
    """Under a soft limit of 64 (fd 200 could not even be placed: EINVAL before), dump and
    restore work; the caller's soft limit is its own again after each; the restored process
    has fd 200 and the image's limits, not pyckpt's raised ones."""
    soft, hard = low_soft_limit
    data = tmp_path / "data.txt"
    # the target keeps the limits it had before this test lowered ours
    t = spawn([python_exe, "-c", FD200, str(data)], name="fd200",
              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard)))
    t.wait_for("^READY")
    assert nofile_limits(t.pid) == ("1024", str(hard))
    pid = t.pid
    pyckpt.dump(pid, tmp_path / "img", kill=True, progress=False)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
    t.reap()
    proc = pyckpt.restore(tmp_path / "img", progress=False)
    spawn.track(proc.pid)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
    assert proc.pid == pid
    assert_running(pid)
    assert os.readlink(f"/proc/{pid}/fd/200") == str(data)
    assert nofile_limits(pid) == ("1024", str(hard))  # the image's, not pyckpt's raised soft limit
    problems = pyckpt.open_image(tmp_path / "img").check_restore(new_pidns=True)
    assert problems == [] and resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


def test_cli_at_soft_limit_5(spawn, python_exe, tmp_path):
    """`ulimit -Sn 5`: the command dumps, checks and restores (before: EMFILE reported as
    a damaged image, exit 6)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    five = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (5, hard))  # noqa: E731
    data = tmp_path / "data.txt"
    t = spawn([python_exe, "-c", FD200, str(data)], name="fd200")
    t.wait_for("^READY")
    image = tmp_path / "img"
    r = subprocess.run(CLI + ["dump", "--kill", str(t.pid), str(image)], preexec_fn=five,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    t.reap()
    r = subprocess.run(CLI + ["check", "--restore", str(image)], preexec_fn=five, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(CLI + ["restore", str(image)], preexec_fn=five, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pid = int(r.stdout)
    spawn.track(pid)
    assert pid == t.pid
    assert os.readlink(f"/proc/{pid}/fd/200") == str(data)


def run_limited(args, limit: int, prefix=()):
    """The command run with RLIMIT_NOFILE (limit, limit): no way to raise it."""
    return subprocess.run(list(prefix) + CLI + args, capture_output=True, text=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))


def test_fd_above_the_hard_limit_is_named_with_the_limit(spawn, python_exe, tmp_path):
    image, pid, _ = fd200_image(spawn, python_exe, tmp_path)
    for command in (["check", "--restore"], ["restore"]):
        r = run_limited(command + [str(image)], 150)
        assert r.returncode == pyckpt.ResourceError.exit_code == 15, r.stdout + r.stderr
        line = r.stderr.strip()
        assert "\n" not in line, line
        assert "fd 200" in line and "150" in line and f"process {pid}" in line, line
        assert "ulimit -Hn" in line, line
        assert not os.path.exists(f"/proc/{pid}"), "a refused restore made a process"
    with pytest.raises(pyckpt.ResourceError) as ei:
        # the API, in this process, with its hard limit lowered in a child
        raise_in_child(lambda: pyckpt.restore(image), 150)
    assert ei.value.fd == 200 and ei.value.limit == 150 and ei.value.resource.startswith("open files")


def raise_in_child(work, limit: int):
    """Run `work()` in a forked child with RLIMIT_NOFILE (limit, limit); re-raise its
    PyckptError here."""
    e = error_in_child(work, lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
    if e is not None:
        raise e


def test_running_out_of_fds_is_a_resource_error_at_every_limit(spawn, python_exe, tmp_path):
    """Hard limits from just above fd 200 up: each `check --restore` and `restore` either
    works or says pyckpt ran out of fds (exit 15, EMFILE, the limit) — never a damaged image,
    a bare errno or a failed restore — and a refused restore leaves no process."""
    # the target's own hard limit is low too: a restore can then give it back without
    # CAP_SYS_RESOURCE
    image, pid, data = fd200_image(spawn, python_exe, tmp_path, nofile=(205, 205))
    seen = {}
    for limit in range(205, 320):
        r = run_limited(["check", "--restore", str(image)], limit)
        seen[limit] = r.returncode
        assert r.returncode in (0, 15), f"limit {limit}: {r.stdout}{r.stderr}"
        if r.returncode == 15:
            assert "EMFILE" in r.stderr and f"soft {limit}, hard {limit}" in r.stderr, r.stderr
            assert "close fds" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        else:
            break
    assert 15 in seen.values(), "no limit was low enough to run out: the test proves nothing"
    assert 0 in seen.values(), f"no limit up to 320 was enough: {seen}"
    # a restore needs what its check needs, and maybe a few fds more (for the new task)
    enough = max(seen)
    for limit in range(enough - 1, enough + 10):
        r = run_limited(["restore", str(image)], limit)
        assert r.returncode in (0, 15), f"limit {limit}: {r.stderr}"
        if r.returncode == 15:
            assert "EMFILE" in r.stderr and r.stderr.count("\n") == 1, r.stderr
            assert not os.path.exists(f"/proc/{pid}"), "a restore that ran out of fds left a process"
            continue
        assert limit >= enough, "a restore worked where its check ran out of fds"
        spawn.track(int(r.stdout))
        assert int(r.stdout) == pid
        assert os.readlink(f"/proc/{pid}/fd/200") == str(data)
        assert nofile_limits(pid) == ("205", "205")
        break
    else:
        raise AssertionError(f"no restore worked with limits {enough - 1}..{enough + 9}")


def test_a_hard_limit_below_the_image_s_is_a_problem_with_its_way_out(spawn, python_exe, tmp_path):
    """The restored task starts with pyckpt's limits; without CAP_SYS_RESOURCE a hard limit
    of the image above pyckpt's cannot be given back: named before anything is made."""
    image, pid, _ = fd200_image(spawn, python_exe, tmp_path, nofile=(300, 300))
    # root without CAP_SYS_RESOURCE (as root on this VM; elsewhere dropped for the test)
    r = run_limited(["check", "--restore", str(image)], 290,
                    prefix=["setpriv", "--bounding-set", "-sys_resource"])
    assert r.returncode == 15, r.stdout + r.stderr
    assert "hard RLIMIT_NOFILE of 300, above pyckpt's own hard limit 290" in r.stdout, r.stdout
    assert "ulimit -Hn 300" in r.stdout and "no restore option avoids this" in r.stdout, r.stdout


def test_translated_turns_exhaustion_into_resource_errors():
    """Whatever an EMFILE/ENFILE/ENOMEM was reported as (an ImageError raised `from None`
    while handling it, a RestoreError raised from it), it comes out as a ResourceError."""
    def image_error(number):
        try:
            raise OSError(number, os.strerror(number))
        except OSError:
            raise pyckpt.ImageError("image at x: cannot read it", path="x") from None

    for number, what in ((errno.EMFILE, "open files (RLIMIT_NOFILE)"),
                         (errno.ENFILE, "open files of the system (fs.file-max)"), (errno.ENOMEM, "memory")):
        with pytest.raises(pyckpt.ResourceError) as ei:
            with limits.translated("reading x"):
                image_error(number)
        assert ei.value.errno == number and ei.value.resource == what
        assert "reading x" in str(ei.value) and isinstance(ei.value.__cause__, pyckpt.ImageError)
    with pytest.raises(pyckpt.ImageError):  # other causes are left alone
        with limits.translated("reading x"):
            image_error(errno.EACCES)
    with pytest.raises(pyckpt.RestoreError):  # ENOMEM of an injected call is not pyckpt's
        with limits.translated("restoring"):
            try:
                raise pyckpt.PtraceError("injected mmap", 1, errno.ENOMEM)
            except pyckpt.PtraceError as e:
                raise pyckpt.RestoreError("restore failed") from e


def test_fd_room_nests_across_threads_and_respects_a_limit_set_meanwhile(low_soft_limit):
    soft, hard = low_soft_limit
    inside, release = threading.Event(), threading.Event()

    def other():
        with limits.fd_room():
            inside.set()
            release.wait(10)

    with limits.fd_room():
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        th = threading.Thread(target=other)
        th.start()
        assert inside.wait(10)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard), "put back while another still works"
    release.set()
    th.join()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
    with limits.fd_room():
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, hard))  # the caller's own choice, meanwhile
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (100, hard)
