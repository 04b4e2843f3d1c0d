"""Plays a pyckpt that dies (SIGKILL) in the middle of its injected calls.

argv: PID WHERE, WHERE one of
  parked   every thread armed at the trampoline and stopped between calls;
  in-call  the leader inside an injected nanosleep(0.2 s) when pyckpt dies.
Prints ARMED, then kills itself with SIGKILL: the kernel detaches the target as
it is, and the target must get back to its own state by itself.
"""

import os
import signal
import struct
import sys

from pyckpt import proc
from pyckpt import ptrace_ops as pt
from pyckpt.inject import Injector, injection_site_from, nr
from pyckpt.seize import Seized

pid, where = int(sys.argv[1]), sys.argv[2]
seized = Seized(pid).__enter__()
vdso = [m for m in proc.read_maps(pid) if m.path == "[vdso]"][0]
site = injection_site_from(pid, vdso.start, vdso.size)
injectors = {tid: Injector(tid, site, held=True).__enter__() for tid in seized.tids}
leader = injectors[pid]
scratch = leader.map_scratch()
assert leader.gadget, "no rt_sigreturn gadget found"
for inj in injectors.values():
    if inj is not leader:
        inj.share(leader)
    assert inj.check(nr.getpid) == pid  # arms each thread at the trampoline
if where == "in-call":
    leader.write(scratch, struct.pack("<qq", 0, 200_000_000))
    pt.request(24, pid, 0, 0, "PTRACE_SYSCALL")  # to the gadget's syscall-entry
    pt.wait(pid)
    regs = pt.decode_regs(pt.get_regs(pid))
    regs.rip, regs.orig_rax = leader.gadget, 35  # nanosleep(0.2 s) instead of rt_sigreturn
    regs.rdi, regs.rsi = scratch, 0
    pt.set_regs(pid, pt.encode_regs(regs))
    pt.request(24, pid, 0, 0, "PTRACE_SYSCALL")  # now sleeping in it
elif where == "at-entry":
    pt.request(24, pid, 0, 0, "PTRACE_SYSCALL")  # to the gadget's syscall-entry
    pt.wait(pid)
elif where == "at-entry-changed":
    pt.request(24, pid, 0, 0, "PTRACE_SYSCALL")
    pt.wait(pid)
    regs = pt.decode_regs(pt.get_regs(pid))
    regs.rip, regs.orig_rax = leader.gadget, 39  # getpid instead of rt_sigreturn
    pt.set_regs(pid, pt.encode_regs(regs))
elif where == "running":
    pt.request(24, pid, 0, 0, "PTRACE_SYSCALL")  # on its way to the gadget: its stop never collected
print("ARMED", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
