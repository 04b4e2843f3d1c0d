"""A TCP server and a connection to itself, checked from inside (tests/test_port_map.py).

Listens on 127.0.0.1 (a free port); a thread answers each connection's lines
with "NAME HITS" (HITS counts the answers of this process since it started,
NAME is what the last "name X" line set).  It also holds a connection to its
own listener with 300 bytes unread at the accepted end.  The check (SIGUSR1)
prints "PORT P" (the port it listens on now) and verifies: the connection's
ports are the listener's (it followed the listener), its unread bytes are
there (put back), fresh bytes go both ways, and a new connection to the
listener's port gets an answer.
"""

import socket
import threading

import selfcheck

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
state = {"name": "original", "hits": 0}
lock = threading.Lock()


def answer(conn: socket.socket) -> None:
    with conn, conn.makefile("rwb") as f:
        for line in f:
            words = line.decode().split()
            with lock:
                if words[:1] == ["name"] and len(words) == 2:
                    state["name"] = words[1]
                state["hits"] += 1
                f.write(f"{state['name']} {state['hits']}\n".encode())
            f.flush()


def serve() -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


client = socket.create_connection(listener.getsockname())
accepted, _ = listener.accept()  # before the server thread takes the listener
UNREAD = bytes(range(100)) * 3
client.sendall(UNREAD)
threading.Thread(target=serve, daemon=True).start()


def check():
    bad = []
    port = listener.getsockname()[1]
    print("PORT", port, flush=True)
    if client.getpeername()[1] != port or accepted.getsockname()[1] != port:
        bad.append(f"the connection to itself is {client.getsockname()} -> {client.getpeername()}, "
                   f"not to port {port}")
    accepted.settimeout(5)
    if accepted.recv(len(UNREAD), socket.MSG_PEEK | socket.MSG_WAITALL) != UNREAD:
        bad.append("the unread bytes are not there")
    client.sendall(b"x")
    accepted.sendall(b"y")
    client.settimeout(5)
    got = accepted.recv(len(UNREAD) + 1, socket.MSG_WAITALL)
    if got != UNREAD + b"x" or client.recv(1) != b"y":
        bad.append("no fresh bytes through the connection")
    client.sendall(UNREAD)  # unread again for the next check
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c, c.makefile("rwb") as f:
        f.write(b"hello\n")
        f.flush()
        if not f.readline().decode().startswith(state["name"] + " "):
            bad.append(f"no answer on port {port}")
    return bad


print("READY", listener.getsockname()[1], flush=True)
selfcheck.serve(check)
