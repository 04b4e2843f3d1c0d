"""x86-64 syscall numbers: every one pyckpt uses, injected into a task or called
through libc's syscall() (the one home for them; names from python-ptrace for
messages, imported only when a message needs one)."""

read = 0
close = 3
mmap = 9
mprotect = 10
munmap = 11
brk = 12
rt_sigaction = 13
pread64 = 17
madvise = 28
dup3 = 292
getpid = 39
setpgid = 109
setsid = 112
sigaltstack = 131
personality = 135
prctl = 157
arch_prctl = 158
umask = 95
fchdir = 81
set_tid_address = 218
set_robust_list = 273
rseq = 334
close_range = 436
pidfd_open = 434
fcntl = 72
pidfd_getfd = 438
userfaultfd = 323


def name(number: int) -> str:
    from ptrace.syscall import SYSCALL_NAMES

    return SYSCALL_NAMES.get(number, f"syscall {number}")
ioctl = 16
getitimer = 36
setitimer = 38
flock = 73
setgroups = 116
setresuid = 117
setresgid = 119
setfsuid = 122
setfsgid = 123
rt_sigqueueinfo = 129
chroot = 161
restart_syscall = 219
timer_create = 222
timer_settime = 223
timer_gettime = 224
epoll_wait = 232
epoll_ctl = 233
unshare = 272
get_robust_list = 274
rt_tgsigqueueinfo = 297
kcmp = 312
clone3 = 435
faccessat2 = 439
shmat = 30
shmdt = 67
# calls a restore resumes by running them again (kinds/cpu.py fixup_restart)
poll = 7
nanosleep = 35
rt_sigtimedwait = 128
futex = 202
clock_nanosleep = 230
epoll_pwait = 281
epoll_pwait2 = 441
setns = 308
chdir = 80
