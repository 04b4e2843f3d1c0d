"""Errors are translated at one boundary (issue 10, item 6).

A bug in pyckpt — a TypeError, an AttributeError, a KeyError no check meant to
raise — is an `InternalError` (exit 70, the traceback with --debug), never a
"damaged image" or a "restore failed" that would send the user looking at the
wrong thing; the target of a dump runs on, a restore leaves nothing behind.
OS errors no kind typed become the operation's own error.  The bugs are planted
in a forked child (error_in_child) or a subprocess, so this process's pyckpt
stays as it is.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

import pyckpt
from pyckpt import errors
from conftest import assert_running, check, error_in_child, reap_dumped, start_ctarget


def test_boundary_translates_by_kind():
    with pytest.raises(errors.DumpError, match=r"dump of process 7 failed: .*; it was left running") as e:
        with errors.boundary("dump of process 7", errors.DumpError, "it was left running"):
            raise OSError(errno.EIO, "I/O error")
    assert isinstance(e.value.__cause__, OSError)
    with pytest.raises(errors.InternalError, match=r"restore from img failed: internal error: "
                                                   r"TypeError: bad operand") as e:
        with errors.boundary("restore from img", errors.RestoreError):
            raise TypeError("bad operand")
    assert e.value.exit_code == 70 and e.value.operation == "restore from img"
    assert isinstance(e.value.__cause__, TypeError)
    typed = errors.PidInUseError(5)
    with pytest.raises(errors.PidInUseError) as e:
        with errors.boundary("restore from img", errors.RestoreError):
            raise typed
    assert e.value is typed  # typed errors pass as they are
    with pytest.raises(KeyboardInterrupt):
        with errors.boundary("x", errors.RestoreError):
            raise KeyboardInterrupt


def test_a_bug_in_a_kind_during_dump_is_internal_and_the_target_runs_on(spawn, ctarget, tmp_path):
    t = start_ctarget(spawn, ctarget, tmp_path)
    img = tmp_path / "img"

    def plant():
        from pyckpt import dumper
        from pyckpt.kinds import itimers

        def broken(ctx):
            raise AttributeError("'NoneType' object has no attribute 'value'")
        # the dumper holds the kinds' dump functions (DUMP_KINDS)
        dumper.DUMP_KINDS = tuple(broken if f is itimers.dump else f for f in dumper.DUMP_KINDS)

    e = error_in_child(lambda: pyckpt.dump(t.pid, img), plant)
    assert isinstance(e, pyckpt.InternalError), e
    assert "AttributeError" in str(e) and f"dump of process {t.pid}" in str(e)
    assert "it was left running" in str(e)
    assert_running(t.pid)
    check(t)
    assert not (img / "COMPLETE").exists()


def test_a_bug_in_a_validator_is_internal_not_a_damaged_image(spawn, ctarget, tmp_path):
    t = start_ctarget(spawn, ctarget, tmp_path)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)
    pyckpt.open_image(img)  # a sound image

    def plant():
        from pyckpt.kinds import itimers

        def broken(image):
            raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")
        itimers.validate = broken

    e = error_in_child(lambda: pyckpt.open_image(img), plant)
    assert isinstance(e, pyckpt.InternalError) and not isinstance(e, pyckpt.ImageError), e
    e = error_in_child(lambda: pyckpt.restore(img), plant)
    assert isinstance(e, pyckpt.InternalError), e
    assert_running(t.pid)


def test_cli_reports_a_bug_as_internal_with_exit_70_and_the_traceback_under_debug(spawn, ctarget, tmp_path):
    t = start_ctarget(spawn, ctarget, tmp_path)
    code = textwrap.dedent("""
        import sys
        from pyckpt import dumper
        from pyckpt.kinds import itimers
        def broken(ctx):
            raise KeyError("planted")
        dumper.DUMP_KINDS = tuple(broken if f is itimers.dump else f for f in dumper.DUMP_KINDS)
        from pyckpt.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    for debug in ([], ["--debug"]):
        img = tmp_path / f"img{len(debug)}"
        r = subprocess.run([sys.executable, "-c", code, *debug, "dump", str(t.pid), str(img)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 70, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("pyckpt dump: error: dump of process") and "internal error: KeyError" in last
        assert "please report it" in last
        assert ("Traceback" in r.stderr) == bool(debug), r.stderr
        if debug:
            assert "in broken" in r.stderr  # the bug's own frame, not only the boundary's
    assert_running(t.pid)
    check(t)
    os.kill(t.pid, 9)
    reap_dumped(t)
