import sys
from pathlib import Path

import pyckpt.pytest

# Started and dumped once per test session; each test gets a fresh copy.
server = pyckpt.pytest.snapshot([sys.executable, str(Path(__file__).with_name("server.py")), "31301"],
                                ready=r"^READY")
