"""pyckpt.signals on its own: no noted SIGINT/SIGTERM is dropped before the work is complete.

Each case runs in a child Python process that signals only itself (os.kill
of its own PID), so a mistake here can never interrupt pytest.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import os, signal
from pyckpt.signals import blocked, checkpoint, commit, deferred_signals

def interrupted(fn):
    try:
        fn()
    except KeyboardInterrupt:
        return True
    return False

def me(sig=signal.SIGINT):
    os.kill(os.getpid(), sig)
"""

CASES = {
    "checkpoint raises a noted signal once": """
        with deferred_signals() as d:
            me()
            assert interrupted(checkpoint)
            assert not interrupted(checkpoint), "raised twice"
        assert d.late == []
    """,
    "a signal held off by blocked() is raised at the next checkpoint": """
        with deferred_signals() as d:
            with blocked():
                me(signal.SIGTERM)
                assert d.noted == []
            assert d.noted == [signal.SIGTERM]
            assert interrupted(checkpoint)
    """,
    # The lost SIGINT of issue 8: noted after the last checkpoint, before the result was complete.
    "commit raises what came after the last checkpoint": """
        with deferred_signals() as d:
            checkpoint()
            me()                      # e.g. while the records are written
            assert interrupted(commit)
        assert d.late == []
    """,
    "commit raises a signal that arrived while blocked": """
        with deferred_signals() as d:
            with blocked():
                me()
                assert interrupted(commit)
    """,
    "after commit the result stands and the signal is recorded": """
        with deferred_signals() as d:
            commit()
            me()
            assert not interrupted(checkpoint)
        assert d.late == [signal.SIGINT]
    """,
    "handlers are put back, and a signal after the block reaches them": """
        before = signal.getsignal(signal.SIGINT)
        with deferred_signals():
            assert signal.getsignal(signal.SIGINT) is not before
        assert signal.getsignal(signal.SIGINT) is before
        assert interrupted(me)        # Python's own handler raises at once
    """,
    "an ignored signal stays ignored": """
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with deferred_signals() as d:
            me(signal.SIGHUP)
            checkpoint()
        assert d.noted == [] and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    """,
    "an inner block's late signal goes to the outer block": """
        with deferred_signals() as outer:
            with deferred_signals() as inner:
                commit()
                me()
            assert inner.late == [signal.SIGINT]
            assert interrupted(checkpoint)
        assert outer.late == []
    """,
    # How the `pyckpt` command wraps a dump: once the dump committed its image, what comes
    # (in the dump's block or after it returned) is late for the command too.
    "commit(interrupt=False) keeps a late signal pending instead of raising it": """
        with deferred_signals() as outer:
            with deferred_signals() as inner:
                commit()
                me()                  # after the dump's commit, inside its block
            me(signal.SIGTERM)        # after the dump returned
            commit(interrupt=False)
            assert not interrupted(checkpoint)
            assert outer.pending == [signal.SIGINT, signal.SIGTERM]
            me()                      # and after the command's own commit
            assert not interrupted(checkpoint)
        assert outer.late == [signal.SIGINT, signal.SIGTERM, signal.SIGINT]
    """,
    "commit(interrupt=False) takes a signal queued while blocked": """
        with deferred_signals() as d:
            with blocked():
                me()
                commit(interrupt=False)
                assert d.pending == [signal.SIGINT]
        assert d.late == [signal.SIGINT]
    """,
    "ignore_after leaves the signals ignored when the block ends": """
        with deferred_signals() as d:
            d.ignore_after = True
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        me(signal.SIGTERM)            # ignored: this child lives on to print ok
        assert not interrupted(me)
    """,
    "an outer block's signal interrupts the inner block at once": """
        with deferred_signals() as outer:
            me()
            def inner():
                with deferred_signals():
                    raise AssertionError("the inner block ran")
            assert interrupted(inner)
            assert not interrupted(checkpoint)
    """,
    "a signal with an error on the way out is handed on, not dropped": """
        with deferred_signals() as outer:
            try:
                with deferred_signals():
                    me(signal.SIGTERM)
                    raise ValueError("a dump error")
            except ValueError:
                pass
            assert interrupted(checkpoint)
    """,
}


@pytest.mark.parametrize("case", list(CASES))
def test_signals(case, python_exe):
    code = PRELUDE + textwrap.dedent(CASES[case]) + "\nprint('ok')\n"
    res = subprocess.run([python_exe, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=30, start_new_session=True)
    assert res.returncode == 0 and res.stdout == "ok\n", f"{case}: exit {res.returncode}\n{res.stderr}"
