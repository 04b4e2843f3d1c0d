"""Declared order: kinds say what must come before what; the orchestrator derives it.

Nothing about the order of kinds depends on module names, import order or
registration order.  Each thing that is ordered (a file kind asked whether it
claims an fd, a table hook, a restore step) has a `name`, and may declare
`before` and `after`: names of other things of the same list, or *points*
that several things share (a restore step that opens fds in the task
`provides` the point "fds in task"; one that needs them is `after` it).
`ordered` sorts topologically and breaks every tie by name, so the same
declarations give the same order whichever module was imported first
(tests/test_declared_order.py imports the kinds in shuffled orders).  A name
that no thing carries is ignored (the kind it names may not be installed); a
cycle is a bug, reported with its members.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


def _names(x, attr: str) -> tuple[str, ...]:
    v = getattr(x, attr, ())
    return (v,) if isinstance(v, str) else tuple(v)


def ordered(things: Iterable) -> list:
    """`things` (each with `.name`, optional `.before`, `.after`, `.provides`) in an
    order that honours every declaration, ties broken by name (then by the order
    given, for things of one name: the steps one kind queued, in its order)."""
    things = list(things)
    carriers: dict[str, list[int]] = {}  # a name or point -> the things carrying it
    for i, t in enumerate(things):
        for n in (t.name, *_names(t, "provides")):
            carriers.setdefault(n, []).append(i)
    edges: dict[int, set[int]] = {i: set() for i in range(len(things))}
    for i, t in enumerate(things):
        for n in _names(t, "after"):
            for j in carriers.get(n, ()):
                if j != i:
                    edges[j].add(i)
        for n in _names(t, "before"):
            for j in carriers.get(n, ()):
                if j != i:
                    edges[i].add(j)
    # Things of one name keep the order they were given in.
    by_name: dict[str, list[int]] = {}
    for i, t in enumerate(things):
        by_name.setdefault(t.name, []).append(i)
    for members in by_name.values():
        for a, b in zip(members, members[1:]):
            edges[a].add(b)
    indegree = {i: 0 for i in edges}
    for i in edges:
        for j in edges[i]:
            indegree[j] += 1
    ready = [(things[i].name, i) for i in edges if indegree[i] == 0]
    heapq.heapify(ready)
    out: list[int] = []
    while ready:
        _, i = heapq.heappop(ready)
        out.append(i)
        for j in edges[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                heapq.heappush(ready, (things[j].name, j))
    if len(out) != len(things):
        stuck = sorted({things[i].name for i in edges if i not in out})
        raise RuntimeError(f"the declared order has a cycle among {stuck}")
    return [things[i] for i in out]
