"""The README's demo runs end to end: a real process is dumped, killed, restored and carries on."""

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"


def test_demo_runs_end_to_end():
    r = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=120,
                       start_new_session=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo succeeded" in r.stdout
    assert "same PID: True" in r.stdout
