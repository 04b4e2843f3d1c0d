"""The loop every Python self-checking target ends with.

`serve(check)` counts iterations of a 20 ms loop; on SIGUSR1 it runs
`check()` (a list of what is wrong, empty when all is well) and prints
`CHECK ok counter=N` or `CHECK FAIL <what>; <what>` — the line the tests'
`conftest.check()` waits for.  A check that raises is reported, never fatal.
"""

import signal
import sys
import time

_asked = False


def _on_usr1(sig, frame):
    global _asked
    _asked = True


def listen() -> None:
    """Install the SIGUSR1 handler (before READY, so no request is lost)."""
    signal.signal(signal.SIGUSR1, _on_usr1)


def serve(check, *, file=None) -> None:
    global _asked
    listen()
    file = file or sys.stdout
    counter = 0
    while True:
        counter += 1
        if _asked:
            _asked = False
            try:
                bad = check()
            except Exception as exc:  # report, don't die: the test reads the verdict
                bad = [f"exception {exc!r}"]
            print(f"CHECK FAIL {'; '.join(bad)}" if bad else f"CHECK ok counter={counter}",
                  file=file, flush=True)
        time.sleep(0.02)
