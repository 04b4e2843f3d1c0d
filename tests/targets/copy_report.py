"""Target of test_fast_copies' comparison of a fast copy with a full restore.

    python copy_report.py WORKDIR

Sets up process state a restore must give back (signal dispositions, an
alternate signal stack, interval and POSIX timers, a pending signal, resource
limits, umask, personality, nice, name, a worker thread), prints READY, then
sleeps.  On SIGUSR1 it prints `REPORT <json>`: what it sees of itself from
inside (getpid/getppid/getpgid/getsid, sigaction of every signal, sigaltstack,
the robust futex list, whether rseq is registered, the fs base, timers, prctl
values, the blocked and pending signals) and from its /proc files (status,
stat, limits, maps with VmFlags, timers, fdinfo, namespaces).  The test
compares the reports of two restores of the same image.
"""

import ctypes
import json
import os
import resource
import signal
import struct
import sys
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR_arch_prctl, NR_get_robust_list, NR_timer_create, NR_timer_settime, NR_timer_gettime = 158, 274, 222, 223, 224
NR_sigaltstack, NR_rt_sigaction, NR_ioprio_get = 131, 13, 252
ARCH_GET_FS, ARCH_GET_GS = 0x1003, 0x1004

os.chdir(sys.argv[1])
os.umask(0o027)
resource.setrlimit(resource.RLIMIT_CORE, (0, 12345678))
resource.setrlimit(resource.RLIMIT_MSGQUEUE, (4096, 8192))
libc.personality(0x0040000)  # ADDR_NO_RANDOMIZE
os.nice(3)
libc.prctl(15, b"copy-report", 0, 0, 0)  # PR_SET_NAME
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, lambda *_: None)
signal.signal(signal.SIGALRM, lambda *_: None)
signal.signal(signal.SIGPROF, lambda *_: None)
import faulthandler  # noqa: E402  (its handlers run on an alternate signal stack of their own)

faulthandler.enable()
signal.setitimer(signal.ITIMER_REAL, 5000, 3000)
signal.setitimer(signal.ITIMER_PROF, 7000, 0)
# a POSIX timer (SIGEV_NONE), armed for a long time
timer_id = ctypes.c_int(0)
sigev = struct.pack("<QiiI44x", 0, 0, 1, 0)  # SIGEV_NONE
buf = ctypes.create_string_buffer(sigev)
assert libc.syscall(NR_timer_create, 1, buf, ctypes.byref(timer_id)) == 0, ctypes.get_errno()  # CLOCK_MONOTONIC
spec = ctypes.create_string_buffer(struct.pack("<qqqq", 0, 0, 9000, 0))
assert libc.syscall(NR_timer_settime, timer_id.value, 0, spec, None) == 0
# a signal pending for the process, blocked
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH, signal.SIGURG})
os.kill(os.getpid(), signal.SIGWINCH)

ask_worker, worker_done, worker_report = threading.Event(), threading.Event(), {}


def work():
    os.setpriority(os.PRIO_PROCESS, 0, 5)  # (the thread's own nice value)
    while True:
        ask_worker.wait()
        ask_worker.clear()
        worker_report.clear()
        worker_report.update(thread_report())
        worker_done.set()


worker = threading.Thread(target=work, name="worker", daemon=True)
asked = False


def on_usr1(*_):
    global asked
    asked = True


signal.signal(signal.SIGUSR1, on_usr1)
worker.start()


def _sigactions():
    out = {}
    act = ctypes.create_string_buffer(32)  # handler, flags, restorer, mask (kernel's struct)
    for sig in range(1, 65):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        if libc.syscall(NR_rt_sigaction, sig, None, act, 8) != 0:
            continue
        handler, flags, restorer, mask = struct.unpack("<QQQQ", act.raw)
        out[sig] = [handler, flags, restorer, mask]
    return out


def _long(nr_, *args):
    v = ctypes.c_ulong(0)
    r = libc.syscall(nr_, *args, ctypes.byref(v))
    return r, v.value


def _prctl(option):
    v = ctypes.c_int(0)
    r = libc.prctl(option, ctypes.byref(v), 0, 0, 0)
    return r, v.value


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return f"error {e.errno}"


def _rseq_registered() -> bool:
    try:
        off = ctypes.c_long.in_dll(libc, "__rseq_offset").value
        size = ctypes.c_uint.in_dll(libc, "__rseq_size").value
    except ValueError:
        return None
    if not size:
        return None
    _, fs = _long(NR_arch_prctl, ARCH_GET_FS)
    cpu_id = ctypes.c_int32.from_address(fs + off + 4).value
    return any(cpu_id == libc.sched_getcpu() for _ in range(20))


def _smaps():
    out, cur = [], None
    for line in _read("/proc/self/smaps").splitlines():
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            parts = line.split()
            cur = [parts[0], parts[1], parts[2], parts[5] if len(parts) > 5 else ""]
            out.append(cur)
        elif first == "VmFlags:":
            cur.append(line.split()[1:])
    return out


def thread_report() -> dict:
    """What the calling thread sees of itself."""
    r = {"tid": threading.get_native_id()}
    ss = ctypes.create_string_buffer(24)
    libc.syscall(NR_sigaltstack, None, ss)
    r["sigaltstack"] = list(struct.unpack("<QiiQ", ss.raw))
    head, length = ctypes.c_void_p(), ctypes.c_size_t()
    libc.syscall(NR_get_robust_list, 0, ctypes.byref(head), ctypes.byref(length))
    r["robust_list"] = [head.value or 0, length.value]
    r["rseq"] = _rseq_registered()
    r["fs_base"] = _long(NR_arch_prctl, ARCH_GET_FS)
    r["blocked"] = sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    r["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    r["sched"] = [os.sched_getscheduler(0), sorted(os.sched_getaffinity(0))]
    r["comm"] = _read("/proc/thread-self/comm")
    status = dict(line.split(":", 1) for line in _read("/proc/thread-self/status").splitlines())
    r["status"] = {k: " ".join(status[k].split()) for k in ("SigBlk", "SigPnd", "Cpus_allowed_list")}
    return r


def report() -> dict:
    r = {}
    r["ids"] = [os.getpid(), os.getppid(), os.getpgid(0), os.getsid(0), threading.get_native_id()]
    r["main"] = thread_report()
    worker_done.clear()
    ask_worker.set()
    r["worker"] = dict(worker_report) if worker_done.wait(10) else "no answer"
    r["sigaction"] = _sigactions()
    ss = ctypes.create_string_buffer(24)
    libc.syscall(NR_sigaltstack, None, ss)
    r["sigaltstack"] = list(struct.unpack("<QiiQ", ss.raw))
    head, length = ctypes.c_void_p(), ctypes.c_size_t()
    libc.syscall(NR_get_robust_list, 0, ctypes.byref(head), ctypes.byref(length))
    r["robust_list"] = [head.value or 0, length.value]
    r["rseq"] = _rseq_registered()
    r["fs_base"] = _long(NR_arch_prctl, ARCH_GET_FS)
    r["gs_base"] = _long(NR_arch_prctl, ARCH_GET_GS)
    r["itimers"] = [[round(v, -2), round(i)] for v, i in (signal.getitimer(w) for w in (0, 1, 2))]  # left, interval
    spec = ctypes.create_string_buffer(32)
    r["posix_timer"] = [libc.syscall(NR_timer_gettime, timer_id.value, spec)]
    isec, insec, vsec, vnsec = struct.unpack("<qqqq", spec.raw)
    r["posix_timer"] += [isec, insec, round(vsec + vnsec / 1e9, -2)]
    r["blocked"] = sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    r["pending"] = sorted(int(s) for s in signal.sigpending())
    r["umask"] = os.umask(0o027)
    r["personality"] = libc.personality(0xFFFFFFFF)
    r["cwd"], r["root"] = os.getcwd(), os.readlink("/proc/self/root")
    r["rlimits"] = [resource.getrlimit(n) for n in range(16)]
    r["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    r["sched"] = [os.sched_getscheduler(0), sorted(os.sched_getaffinity(0))]
    r["ioprio"] = libc.syscall(NR_ioprio_get, 1, 0)
    # PR_GET_PDEATHSIG 2, DUMPABLE 3, KEEPCAPS 7, TIMING 13, SECCOMP 21, SECUREBITS 27,
    # TIMERSLACK 30, SUBREAPER 37, NO_NEW_PRIVS 39, THP_DISABLE 42, SPECULATION 52, MDWE 66
    r["prctl"] = {"pdeathsig": _prctl(2), "subreaper": _prctl(37)}
    for name, opt in (("dumpable", 3), ("keepcaps", 7), ("seccomp", 21), ("securebits", 27),
                      ("timerslack", 30), ("no_new_privs", 39), ("thp_disable", 42), ("mdwe", 66)):
        r["prctl"][name] = libc.prctl(opt, 0, 0, 0, 0)
    r["prctl"]["speculation"] = libc.prctl(52, 0, 0, 0, 0)
    status = dict(line.split(":", 1) for line in _read("/proc/self/status").splitlines())
    r["status"] = {k: " ".join(v.split()) for k, v in status.items()
                   if k not in ("Pid", "Tgid", "PPid", "TracerPid", "NStgid", "NSpid", "NSpgid", "NSsid",
                                "State", "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
                   and not k.startswith(("Vm", "Rss", "Huge"))}
    r["status"]["NSpid"] = status["NSpid"].split()[-1]
    r["status"]["VmLck"] = status["VmLck"]
    r["status"]["VmPin"] = status["VmPin"]
    stat = _read("/proc/self/stat")
    fields = stat[stat.rindex(")") + 2:].split()
    # flags, priority, nice, num_threads, rt_priority, policy, exit_signal
    r["stat"] = {n: fields[i - 3] for n, i in (("flags", 9), ("priority", 18), ("nice", 19),
                                               ("num_threads", 20), ("exit_signal", 38),
                                               ("rt_priority", 40), ("policy", 41))}
    # the mm's fields (prctl PR_SET_MM): start/end of code, start of stack, data, brk, args, env
    r["stat_mm"] = [fields[i - 3] for i in (26, 27, 28, 45, 46, 47, 48, 49, 50, 51)]
    r["limits"] = _read("/proc/self/limits")
    r["maps"] = _smaps()
    r["timers"] = _read("/proc/self/timers")
    fds = {}
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            info = _read(f"/proc/self/fdinfo/{fd}")
        except OSError:
            continue
        fds[fd] = [target.split(":")[0] if ":[" in target else target,
                   {k: v.strip() for k, v in (line.split(":", 1) for line in info.splitlines() if ":" in line)
                    if k in ("pos", "flags")}]
    r["fds"] = fds
    r["ns"] = {n: os.readlink(f"/proc/self/ns/{n}") for n in sorted(os.listdir("/proc/self/ns"))}
    r["cmdline"], r["environ"] = _read("/proc/self/cmdline"), len(_read("/proc/self/environ"))
    r["exe"], r["comm"] = os.readlink("/proc/self/exe"), _read("/proc/self/comm")
    r["auxv"] = len(open("/proc/self/auxv", "rb").read())
    r["threads"] = sorted(_read(f"/proc/self/task/{t}/comm").strip() for t in os.listdir("/proc/self/task"))
    return r


print("READY", flush=True)
while True:
    if asked:
        asked = False
        print("REPORT " + json.dumps(report()), flush=True)
    time.sleep(0.02)
