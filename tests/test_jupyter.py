"""A Jupyter kernel is saved with its variables and comes back for a new client
(examples/jupyter_kernel.py, run as a user would)."""

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "examples" / "jupyter_kernel.py"


def test_jupyter_kernel_comes_back_with_its_variables():
    r = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300,
                       start_new_session=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kernel example succeeded" in r.stdout
    assert "a new client runs a cell (ok): 42 100000 9999800001" in r.stdout
