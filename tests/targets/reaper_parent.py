"""A parent for the `dump --kill` tests: forks a child (the process to dump), which
sleeps in a loop, and reaps it when it dies — late, or never.

  reaper_parent.py late SECONDS   reap the child SECONDS after it has died, then print
                                  `reaped STATUS` and sleep
  reaper_parent.py never          never reap it (the child stays a zombie while this runs)

Prints `parent P child C` once the child runs.  Only the child is dumped.
"""

import os
import select
import sys
import time

mode = sys.argv[1]
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(r)
    os.close(w)  # the parent learns that the child runs from this close
    while True:
        time.sleep(0.01)
os.close(w)
os.read(r, 1)  # EOF once the child has closed its copy of the write end
os.close(r)
print(f"parent {os.getpid()} child {child}", flush=True)
if mode == "late":
    pidfd = os.pidfd_open(child)
    select.select([pidfd], [], [])  # readable once the child has died
    time.sleep(float(sys.argv[2]))  # a parent that is slow to reap, on purpose
    _, status = os.waitpid(child, 0)
    print(f"reaped {status}", flush=True)
elif mode != "never":
    sys.exit(f"unknown mode {mode}")
while True:
    time.sleep(3600)
