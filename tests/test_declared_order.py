"""Declared order (issue 10, item 3): which kind claims an fd first, in which order
table hooks and deferred steps run, follows from what each kind declares
(kinds/order.py), never from import or registration order.

The kind modules are imported in shuffled orders in fresh interpreters: the
orders come out the same, and a dump --kill + restore of a tree with pidfds,
epoll sets and pipes (targets/pidfds.py) made under a shuffled order passes
its self-check.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from types import SimpleNamespace as N

import pytest

from conftest import TARGETS, check
from pyckpt.kinds.order import ordered
from test_trees import trees  # noqa: F401 -- the fixture

SHUFFLED_IMPORT = """
import importlib, json, pkgutil, random, sys
import pyckpt.kinds as kinds
names = sorted(m.name for m in pkgutil.iter_modules(kinds.__path__))
random.Random(int(sys.argv[1])).shuffle(names)
for n in names:
    importlib.import_module("pyckpt.kinds." + n)
from pyckpt.kinds.files import FILE_KINDS, TABLE_HOOKS
from pyckpt.kinds.memory import MAPPED_OBJECTS
"""


def _orders(seed: int) -> dict:
    code = SHUFFLED_IMPORT + "print(json.dumps({'kinds': [k.name for k in FILE_KINDS], " \
                             "'hooks': [h.name for h in TABLE_HOOKS], " \
                             "'mapped': list(MAPPED_OBJECTS), 'imported': names}))"
    r = subprocess.run([sys.executable, "-c", code, str(seed)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_shuffled_imports_give_one_order():
    runs = [_orders(seed) for seed in range(6)]
    assert len({tuple(r["imported"]) for r in runs}) > 1  # the shuffles differ
    for key in ("kinds", "hooks", "mapped"):
        assert all(r[key] == runs[0][key] for r in runs), key
    kinds = runs[0]["kinds"]
    # what the kinds declare: every socket kind is asked before unix.py's catch-all
    assert kinds[-1] == "unix"
    assert runs[0]["hooks"].index("epoll items") < runs[0]["hooks"].index("file locks")


@pytest.mark.parametrize("seed", [1, 2])
def test_a_restore_made_under_shuffled_imports_passes(trees, spawn, python_exe, tmp_path, seed):
    t = spawn([python_exe, str(TARGETS / "pidfds.py")], name="pidfds")
    a, b = map(int, t.wait_for(r"^READY a=(\d+) b=(\d+)$").groups())
    trees.adopt(t.pid, a, b)
    check(t)
    code = SHUFFLED_IMPORT + f"""
import os, time, pyckpt
pyckpt.dump({t.pid}, {str(tmp_path / 'img')!r}, kill=True)
while any(os.path.exists(f"/proc/{{p}}") and open(f"/proc/{{p}}/stat").read().split(") ")[1][0] != "Z"
          for p in ({a}, {b})):
    time.sleep(0.01)
"""
    r = subprocess.run([sys.executable, "-c", code, str(seed)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    from conftest import reap_dumped
    from test_trees import _wait_gone

    reap_dumped(t)
    _wait_gone(a, b)
    code = SHUFFLED_IMPORT + f"print(__import__('pyckpt').restore({str(tmp_path / 'img')!r}).pid)"
    r = subprocess.run([sys.executable, "-c", code, str(seed + 10)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    for pid in (t.pid, a, b):
        spawn.track(pid)
    t.popen = None
    assert int(r.stdout) == t.pid
    check(t)


def test_ordered_follows_declarations_and_breaks_ties_by_name():
    steps = [N(name="posix timers"), N(name="file locks", after=("fds in task",)),
             N(name="pidfds", provides=("fds in task",)), N(name="epoll items", after=("pidfds",)),
             N(name="tcp", before=("unix",)), N(name="unix")]
    expected = None
    for seed in range(30):
        xs = steps[:]
        random.Random(seed).shuffle(xs)
        got = [x.name for x in ordered(xs)]
        expected = expected or got
        assert got == expected
    assert expected.index("pidfds") < expected.index("file locks")
    assert expected.index("pidfds") < expected.index("epoll items")
    assert expected.index("tcp") < expected.index("unix")
    # steps of one name keep the order they were queued in
    one = [N(name="interval timers", n=i) for i in range(5)]
    assert [x.n for x in ordered(one)] == list(range(5))
    with pytest.raises(RuntimeError, match=r"cycle among \['a', 'b'\]"):
        ordered([N(name="a", after=("b",)), N(name="b", after=("a",))])
