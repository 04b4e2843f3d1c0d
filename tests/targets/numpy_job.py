"""A numpy job: a worker thread multiplies a 500x500 matrix by itself over and over
(OpenBLAS, its own threads) and adds each product's trace to a running total.

The check (SIGUSR1, selfcheck): the matrix is the one it started with (its digest),
the product is still the first one (np.allclose), the total is exactly that many
times the first trace added up, and the worker has gone on since the last check."""

import hashlib
import threading
import time

import numpy as np

import selfcheck

rng = np.random.default_rng(11)
A = rng.standard_normal((500, 500))
DIGEST = hashlib.sha256(A.tobytes()).hexdigest()
P = A @ A
T0 = float(np.trace(P))
state = {"n": 0, "acc": 0.0, "last": T0}
seen = [0]
lock = threading.Lock()


def work():
    while True:
        t = float(np.trace(A @ A))
        with lock:
            state["n"] += 1
            state["acc"] += t
            state["last"] = t
        time.sleep(0.005)


def check():
    bad = []
    deadline = time.monotonic() + 5
    while True:
        with lock:
            n, acc, last = state["n"], state["acc"], state["last"]
        if n > seen[0] or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if n <= seen[0]:
        bad.append(f"the worker stopped at {n} products")
    seen[0] = n
    want = 0.0
    for _ in range(n):
        want += T0
    if acc != want or last != T0:
        bad.append(f"after {n} products the total is {acc!r}, not {want!r} (last trace {last!r})")
    if hashlib.sha256(A.tobytes()).hexdigest() != DIGEST:
        bad.append("the matrix changed")
    if not np.allclose(A @ A, P):
        bad.append("A @ A is not the first product any more")
    return bad


threading.Thread(target=work, daemon=True).start()
selfcheck.listen()
print("READY", threading.active_count(), flush=True)
selfcheck.serve(check)
