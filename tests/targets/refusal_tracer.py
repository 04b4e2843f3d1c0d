"""Helper for the refusal tests: PTRACE_SEIZE the given PID, then sleep.

Only ever given a PID the test itself started.  PTRACE_SEIZE does not stop
the tracee; it keeps running with this process as its tracer until this
process dies, when the kernel detaches it.
"""

import ctypes
import os
import sys
import time

PTRACE_SEIZE = 0x4206

pid = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
if libc.ptrace(PTRACE_SEIZE, pid, None, None) != 0:
    err = ctypes.get_errno()
    print(f"seize failed {err} {os.strerror(err)}", flush=True)
    sys.exit(1)
print(f"seized {pid} by {os.getpid()}", flush=True)
while True:
    time.sleep(3600)
