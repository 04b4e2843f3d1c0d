"""One home for the machine's numbers and its C library (issue 10, item 7): syscall
numbers only in inject/nr.py, the page size and the libc handle (with every
prototype) only in arch.py.  A module that writes one again (a `SYS_x = N` or
`PAGE = 4096` line, a `ctypes.CDLL(None...)`) fails this test, which names it."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).parent.parent / "src" / "pyckpt"
# pyckpt.hooks runs inside the target's Python: importing inject/ there would load
# ptrace and the C helper into the target, so it keeps the one number it needs.
INSIDE_THE_TARGET = {"hooks.py"}


def test_syscall_numbers_page_size_and_libc_have_one_home():
    offenders = []
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC).as_posix()
        if rel in INSIDE_THE_TARGET:
            continue
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if re.match(r"^(\w+, )*SYS_\w+(, \w+)* = ", line) and rel != "inject/nr.py":
                offenders.append(f"{rel}:{n}: {line.strip()} (use inject/nr.py)")
            if re.match(r"^PAGE(_SIZE)? = ", line) and rel != "arch.py":
                offenders.append(f"{rel}:{n}: {line.strip()} (use arch.PAGE)")
            if "CDLL(None" in line and rel != "arch.py":
                offenders.append(f"{rel}:{n}: {line.strip()} (use arch.libc)")
    assert not offenders, "\n".join(offenders)
