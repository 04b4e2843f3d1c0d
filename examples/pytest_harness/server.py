"""A server that is slow to start: it builds its state for 2 s, then listens.

Protocol (one line per request, one line per answer): GET -> "counter N
entries E checksum C"; INCR -> the new counter; RAND -> a random number;
PID -> os.getpid();
QUIESCED -> whether the before_dump hook ran (with WITH_HOOKS=1).  Every client may change the state (INCR): a test that
starts from a copy of the ready server sees the pristine state, counter 0.
"""

import os
import random
import selectors
import socket
import sys
import time

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
quiesced = False

random.seed(1234)  # the same in every copy, unless re-seeded after the restore (see hooks)
if os.environ.get("WITH_HOOKS"):
    import pyckpt.hooks

    @pyckpt.hooks.after_restore
    def new_identity():
        random.seed()

    @pyckpt.hooks.before_dump
    def quiesce():
        global quiesced
        quiesced = True

time.sleep(float(os.environ.get("START_SECONDS", "2")))  # the expensive start: loading, warming caches...
table = {i: i * i % 1000003 for i in range(200_000)}
state = {"counter": 0}

if os.environ.get("FORK_TEMPLATE"):  # the fork() baseline of bench/harness.py, not for tests
    import ctypes, fcntl, signal, struct
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the kernel
    print("TEMPLATE", flush=True)
    while True:  # one byte on stdin: one child, in its own network namespace, serving
        if not sys.stdin.buffer.read(1):
            sys.exit(0)
        child = os.fork()
        if child == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            ctypes.CDLL(None).unshare(0x40000000)  # CLONE_NEWNET
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                fcntl.ioctl(s, 0x8914, struct.pack("16sh22x", b"lo", 0x9))  # lo up
            break
        print(f"CHILD {child}", flush=True)

listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", PORT))
listener.listen(64)
sel = selectors.DefaultSelector()
sel.register(listener, selectors.EVENT_READ)
print(f"READY port={PORT} entries={len(table)}", flush=True)


def answer(line: str) -> str:
    if line == "GET":
        return f"counter {state['counter']} entries {len(table)} checksum {sum(table.values()) % 65521}"
    if line == "INCR":
        state["counter"] += 1
        return str(state["counter"])
    if line == "RAND":
        return repr(random.random())
    if line == "QUIESCED":
        return str(quiesced)
    if line == "PID":
        return str(os.getpid())
    return "ERR unknown request"


buffers = {}
while True:
    for key, _ in sel.select():
        if key.fileobj is listener:
            conn, _ = listener.accept()
            sel.register(conn, selectors.EVENT_READ)
            buffers[conn] = b""
            continue
        conn = key.fileobj
        data = conn.recv(4096)
        if not data:
            sel.unregister(conn)
            conn.close()
            del buffers[conn]
            continue
        buffers[conn] += data
        while b"\n" in buffers[conn]:
            line, buffers[conn] = buffers[conn].split(b"\n", 1)
            request = line.decode().strip()
            print(f"request {request}", flush=True)
            conn.sendall((answer(request) + "\n").encode())
