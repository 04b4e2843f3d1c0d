"""An asyncio server with a forked multiprocessing child that runs an event loop too.

The child is a multiprocessing.Process of the "fork" context, started from
inside the parent's running loop: it inherits the parent's epoll set (the
selector's) and the files in it, and makes its own loop and set with
asyncio.run — or, with argv `blocking`, only waits in a blocking recv (its
one epoll set is then the inherited one).  The parent listens on a TCP port of 127.0.0.1; for each line a
client sends it asks the child, over a multiprocessing Pipe that both loops
watch (add_reader), and answers `child PID LINE`.  On SIGUSR1 (a loop signal
handler) the parent checks itself: a round trip to the child through both
loops, and its selector's set still holding exactly what the loop registered
(its self-pipe, the listener, the Pipe); it prints `CHECK ok counter=N` or
`CHECK FAIL ...`.  Prints `READY port=P child=C`.  The child exits when its
parent changes.
"""

import asyncio
import multiprocessing
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(__file__))
from ev_common import epoll_items


def child_main(conn, parent: int, blocking: bool) -> None:
    if blocking:
        while os.getppid() == parent:
            if conn.poll(0.2):
                conn.send(f"child {os.getpid()} {conn.recv()}")
        return

    async def main():
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv()))
        while os.getppid() == parent:
            try:
                msg = await asyncio.wait_for(inbox.get(), 0.2)
            except asyncio.TimeoutError:
                continue
            conn.send(f"child {os.getpid()} {msg}")

    asyncio.run(main())


async def main() -> None:
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("fork")
    mine, theirs = ctx.Pipe()
    child = ctx.Process(target=child_main, args=(theirs, os.getpid(), "blocking" in sys.argv[1:]),
                        daemon=True)
    child.start()
    theirs.close()
    answers: asyncio.Queue = asyncio.Queue()
    loop.add_reader(mine.fileno(), lambda: answers.put_nowait(mine.recv()))
    lock = asyncio.Lock()

    async def ask(line: str) -> str:
        async with lock:
            mine.send(line)
            return await asyncio.wait_for(answers.get(), 10)

    async def handle(reader, writer):
        line = (await reader.readline()).decode().strip()
        writer.write((await ask(line) + "\n").encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    selector_fd = loop._selector.fileno()  # the loop's epoll set
    counter = 0

    async def check():
        bad = []
        try:
            got = await ask("ping")
            if got != f"child {child.pid} ping":
                bad.append(f"the child answered {got!r}")
        except Exception as e:  # noqa: BLE001 -- reported, not fatal
            bad.append(f"asking the child: {e!r}")
        registered = sorted(loop._selector.get_map().keys())
        watched = sorted(t for t, _, _ in epoll_items(selector_fd))
        if watched != registered:
            bad.append(f"the selector's set watches fds {watched}, the loop registered {registered}")
        print(f"CHECK FAIL {'; '.join(bad)}" if bad else f"CHECK ok counter={counter}", flush=True)

    loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(check()))
    first = await ask("hello")
    assert first == f"child {child.pid} hello", first
    print(f"READY port={server.sockets[0].getsockname()[1]} child={child.pid}", flush=True)
    while True:
        counter += 1
        await asyncio.sleep(0.02)


asyncio.run(main())
