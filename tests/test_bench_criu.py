"""bench/bench.py --criu: CRIU beside pyckpt in one run (bench/README.md).

CI builds no CRIU, so the comparison runs only where a criu binary is found
(PYCKPT_BENCH_CRIU, else criu on the PATH, else /tmp/criu/criu/criu, where
bench/README.md builds one); elsewhere that test is skipped, never passed.
The bench checks every restored process itself (checksum and PID) and exits
non-zero on a mismatch; the test reads the JSON it writes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench.py"


def _criu() -> str | None:
    for c in (os.environ.get("PYCKPT_BENCH_CRIU"), shutil.which("criu"), "/tmp/criu/criu/criu"):
        if c and os.access(c, os.X_OK):
            return c
    return None


CRIU = _criu()


def test_criu_that_is_not_criu_is_refused_before_anything_runs(tmp_path):
    r = subprocess.run([sys.executable, str(BENCH), "--sizes", "", "--criu", "/bin/true", "--tmp", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--criu /bin/true: not a working criu binary" in r.stderr
    assert list(tmp_path.iterdir()) == []  # no work directory, no target


def test_empty_sizes_without_criu_is_refused(tmp_path):
    r = subprocess.run([sys.executable, str(BENCH), "--sizes", "", "--tmp", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "nothing to measure" in r.stderr


@pytest.mark.skipif(CRIU is None, reason="no criu binary (PYCKPT_BENCH_CRIU, PATH, /tmp/criu/criu/criu)")
def test_tiny_comparison_runs_every_contestant_and_checks_every_restore(tmp_path):
    out = tmp_path / "out.json"
    r = subprocess.run([sys.executable, str(BENCH), "--sizes", "", "--criu", CRIU, "--criu-sizes", "4",
                        "--repeat", "2", "--copies", "2", "--no-warmup", "--tmp", str(tmp_path),
                        "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())["criu"]
    assert res["version"] and res["path"] == CRIU
    (size,) = res["results"]
    assert size["size_mib"] == 4
    for key in ("dump", "restore", "dump_kill", "copies", "copies_per_copy"):
        for who in ("cli", "api", "criu"):
            samples = size[key][who]["samples"]
            assert len(samples) == (4 if key == "copies_per_copy" else 2) and all(s > 0 for s in samples)
        assert set(size[key]["ratio"]) == {"cli", "api"}
    # the images hold the target's 4 MiB of dirtied memory, in both formats
    assert all(size["image_bytes"][w] >= 4 << 20 for w in ("cli", "api", "criu"))
    assert "pyckpt beside CRIU" in r.stdout and "CRIU / pyckpt command" in r.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # work directory removed
