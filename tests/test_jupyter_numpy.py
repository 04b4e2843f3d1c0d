"""A notebook kernel holding numpy and pandas state (issue 13's "how it is shown"): a
real `jupyter server`, cells over an open websocket build a numpy array, a matrix
product (OpenBLAS's threads) and a pandas DataFrame; the kernel is saved through
the `pyckpt jupyter` command with the tab open and stopped, restored under the same
id, and the same tab's next cell recomputes every value from the restored objects
and compares it with what the kernel printed before the save."""

from __future__ import annotations

import psutil
import pytest

pytest.importorskip("numpy")
pytest.importorskip("pandas")

# (after the skips; `server` is the fixture, used by name)
from test_jupyter_server import Tab, _wait, server  # noqa: E402,F401

BUILD = """
import numpy as np, pandas as pd
rng = np.random.default_rng(7)
arr = rng.standard_normal((800, 800))
prod = arr @ arr.T
df = pd.DataFrame({"a": np.arange(300_000), "b": rng.integers(0, 100, 300_000)})
df["c"] = df.a * 2 + df.b
df["when"] = pd.date_range("2026-01-01", periods=len(df), freq="min")
by_b = df.groupby("b").c.sum()
def summary():
    return (f"{arr.sum():.9f} {np.trace(prod):.6f} {int(df.c.sum())} {int(by_b.max())} "
            f"{df.when.iloc[-1]} {len(df)}")
print(summary())
"""
# recomputed from the restored objects: each must equal what summary() printed before
CHECK = """
same = [bool(np.allclose(arr @ arr.T, prod)), bool((df.groupby("b").c.sum() == by_b).all())]
print(summary(), *same)
"""


def test_numpy_and_pandas_state_comes_back_under_the_same_id(server, tmp_path):
    kid = server.api("POST", "api/kernels", {"name": "python3"})["id"]
    tab = Tab(server, kid)
    built = tab.run(BUILD, timeout=120)
    assert len(built) == 1 and built[0].endswith(" 300000"), built
    pid = _wait("the kernel process", server.kernel_pid)
    threads = psutil.Process(pid).num_threads()

    image = tmp_path / "saved"
    r = server.cli("save", kid, str(image), "--stop")  # the tab stays open
    assert r.returncode == 0, r.stderr
    assert "it has ended" in r.stdout, r.stdout
    r = server.cli("restore", str(image))
    assert r.returncode == 0, r.stderr
    assert f"restored kernel {kid} (python3) as PID {pid}" in r.stdout, r.stdout
    assert psutil.Process(pid).num_threads() == threads  # OpenBLAS's and ZMQ's threads too

    assert tab.run(CHECK, timeout=120) == [f"{built[0]} True True"]
    # the restored kernel computes on: numpy's threads work, pandas makes new frames
    assert tab.run("print(int((arr @ arr).shape[0]), len(df[df.b == 7]) > 0)") == ["800 True"]
    tab.close()
