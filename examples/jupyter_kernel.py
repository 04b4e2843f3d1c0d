"""Save a running Jupyter kernel with its variables, kill it, bring it back.

    pip install ipykernel jupyter_client
    python3 examples/jupyter_kernel.py

Starts an IPython kernel (ipykernel) as a client would, runs a cell in it
that builds some state, disconnects the client, dumps the kernel with
pyckpt and kills it, restores it from the image, and connects a new client
with the same connection file: the variables are still there and the
kernel carries on counting its executions.

A kernel talks TCP: it listens on five ports (shell, iopub, stdin, control,
heartbeat) and holds a connection to itself; pyckpt saves the listeners and
rebuilds that connection.  Clients must be disconnected while the kernel is
dumped: a connection to a process outside the image is refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import psutil

import pyckpt

try:
    from jupyter_client import BlockingKernelClient
    from jupyter_client.connect import write_connection_file
except ImportError:
    sys.exit("this example needs ipykernel and jupyter_client: pip install ipykernel jupyter_client")


def run_cell(connection_file: str, code: str) -> tuple[str, list[str]]:
    """Connect, run `code`, disconnect; (status, printed lines)."""
    client = BlockingKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels()
    out: list[str] = []
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(
            code, timeout=60,
            output_hook=lambda m: out.extend(m["content"]["text"].splitlines())
            if m["msg_type"] == "stream" else None)
    finally:
        client.stop_channels()
    return reply["content"]["status"], out


def wait_for_clients_to_leave(pid: int, timeout: float = 30.0) -> None:
    """A dump refuses TCP connections to processes outside the image: wait until
    the kernel has closed its side of the client's connections (it holds
    connections to itself, which are saved)."""
    kernel = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while True:
        conns = kernel.net_connections(kind="tcp")
        own = {c.laddr.port for c in conns}
        outside = [c for c in conns if c.raddr and c.raddr.port not in own]
        if not outside:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the kernel still has clients after {timeout:.0f} s: {outside}")
        time.sleep(0.05)


def main(workdir: str) -> bool:
    connection_file, _ = write_connection_file(os.path.join(workdir, "kernel.json"), ip="127.0.0.1")
    log = open(os.path.join(workdir, "kernel.log"), "wb")
    kernel = subprocess.Popen([sys.executable, "-m", "ipykernel_launcher", "-f", connection_file],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    restored = None
    try:
        # The kernel's own random generator (not the global one: IPython draws
        # from that itself), a table, a number and the execution count so far.
        status, out = run_cell(connection_file, "import random\nrng = random.Random(7)\nrng.random()\n"
                               "table = {i: i * i for i in range(100_000)}\nanswer = 41 + 1\n"
                               "count_before = get_ipython().execution_count\nprint(count_before)")
        count_before = int(out[-1])
        print(f"1. kernel {kernel.pid} ran a cell ({status}): table of 100000 squares, answer = 42, "
              f"execution count {count_before}")
        wait_for_clients_to_leave(kernel.pid)

        image = os.path.join(workdir, "image")
        t = time.perf_counter()
        pyckpt.dump(kernel.pid, image, kill=True)
        kernel.wait()
        print(f"2. dumped it in {time.perf_counter() - t:.2f} s and killed it")

        t = time.perf_counter()
        restored = pyckpt.restore(image, fds={0: os.open(os.devnull, os.O_RDONLY),
                                              1: log.fileno(), 2: log.fileno()})
        print(f"3. restored it in {time.perf_counter() - t:.2f} s as PID {restored.pid}")

        status, out = run_cell(connection_file, "print(answer, len(table), table[99_999], rng.random())\n"
                               "print(get_ipython().execution_count - count_before)")
        print(f"4. a new client runs a cell ({status}): {' | '.join(out)}")
        # What the restore is responsible for: the variables, the generator's
        # state (its next number follows the one drawn before the dump), and a
        # counter that carries on (a new kernel would start again at 1). How
        # many executions a client's own requests add depends on the versions
        # of IPython and ipykernel, so only "more than before" is checked.
        import random
        rng = random.Random(7)
        rng.random()  # drawn in the first cell, before the dump
        want = f"42 100000 {99_999 ** 2} {rng.random()}"
        ok = (status == "ok" and out[:1] == [want] and len(out) == 2
              and out[1].isdigit() and int(out[1]) > 0)
        print("kernel example " + ("succeeded: the kernel came back with its variables"
                                   if ok else f"FAILED (expected {want!r}, then a positive count)"))
        return ok
    finally:
        for p in (kernel, restored):
            if p is not None and p.pid is not None:
                try:
                    os.kill(p.pid, 9)
                except ProcessLookupError:
                    pass
        if restored is not None:
            try:
                os.waitpid(restored.pid, 0)
            except ChildProcessError:
                pass
        kernel.wait()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="pyckpt-kernel-") as d:
        sys.exit(0 if main(d) else 1)
