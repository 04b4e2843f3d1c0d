"""A notebook kernel is saved with its tab open and comes back under its id, with
its variables (examples/jupyter_kernel.py, run as a user would: a jupyter server,
a websocket tab, `pyckpt jupyter save --stop` and `pyckpt jupyter restore`)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "jupyter_kernel.py"


def test_jupyter_kernel_comes_back_with_its_variables():
    pytest.importorskip("jupyter_server")
    pytest.importorskip("websocket")
    r = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300,
                       start_new_session=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kernel example succeeded" in r.stdout
    assert f"the same tab runs a cell: 42 100000 {99_999 ** 2} 42" in r.stdout
