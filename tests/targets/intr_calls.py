"""Python threads blocked in calls a dump interrupts, each checking every result.

Nothing sends SIGUSR2, writes the pipe or sets the
event, so signal.sigtimedwait must give None, poll an empty list, the event
False and select nothing; anything else is printed as "BAD ...".  A "STAT"
line every 100 ms gives each loop's completed calls."""

import os
import select
import signal
import sys
import threading
import time

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})  # before the threads: they inherit it
r, w = os.pipe()
counts = {"sigtimedwait": 0, "poll": 0, "select": 0, "event": 0}
bad = []


def loop(name, call, expected):
    while True:
        got = call()
        if got != expected:
            bad.append(f"BAD {name} returned {got!r}")
            print(bad[-1], flush=True)
        counts[name] += 1


poller = select.poll()
poller.register(r, select.POLLIN)
event = threading.Event()
for name, call, expected in (
    ("sigtimedwait", lambda: signal.sigtimedwait([signal.SIGUSR2], 0.2), None),
    ("poll", lambda: poller.poll(300), []),
    ("select", lambda: select.select([r], [], [], 0.25), ([], [], [])),
    ("event", lambda: event.wait(0.5), False),
):
    threading.Thread(target=loop, args=(name, call, expected), daemon=True).start()
print(f"READY {os.getpid()}", flush=True)
while True:
    time.sleep(0.1)
    print("STAT bad=%d " % len(bad) + " ".join(f"{k}={v}" for k, v in counts.items()), flush=True)

