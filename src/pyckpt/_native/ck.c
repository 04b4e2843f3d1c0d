/* pyckpt native helper: the parts Python cannot do, or cannot do fast.
 *
 * Everything here is a thin, stateless wrapper: ptrace requests, the
 * single-step loop that runs one syscall inside a stopped task, the
 * clone3(set_tid) that makes a restored task, pagemap scanning and page
 * copies.  Errors are returned as -errno; Python turns them into typed
 * exceptions (pyckpt.errors).  No function keeps state between calls.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <linux/elf.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <linux/userfaultfd.h>

#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#endif

/* Raw ptrace: returns the kernel's result or -errno. */
long ck_ptrace(long request, int pid, unsigned long addr, unsigned long data)
{
    long r = syscall(SYS_ptrace, request, pid, addr, data);
    return r < 0 ? -errno : r;
}

/* waitpid(pid, __WALL) retried on EINTR; returns pid or -errno. */
int ck_wait(int pid, int *status)
{
    for (;;) {
        int r = waitpid(pid, status, __WALL);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return -errno;
    }
}

/* PTRACE_GETREGSET / SETREGSET for one note type; returns the size moved or -errno. */
long ck_getregset(int pid, int note, void *buf, size_t len)
{
    struct iovec iov = { buf, len };
    if (syscall(SYS_ptrace, PTRACE_GETREGSET, pid, (unsigned long)note, &iov) < 0)
        return -errno;
    return (long)iov.iov_len;
}

long ck_setregset(int pid, int note, void *buf, size_t len)
{
    struct iovec iov = { buf, len };
    if (syscall(SYS_ptrace, PTRACE_SETREGSET, pid, (unsigned long)note, &iov) < 0)
        return -errno;
    return (long)iov.iov_len;
}

/* The six syscall argument registers of x86-64, in order. */
static void put_args(struct user_regs_struct *regs, const long *args)
{
    regs->rdi = args[0];
    regs->rsi = args[1];
    regs->rdx = args[2];
    regs->r10 = args[3];
    regs->r8 = args[4];
    regs->r9 = args[5];
}

/* One resume under `request` (PTRACE_SINGLESTEP or PTRACE_SYSCALL) and the
 * SIGTRAP stop it must end in (SIGTRAP|0x80 for a syscall stop under
 * PTRACE_O_TRACESYSGOOD).  0, 1 for any other stop, or -errno. */
static int resume_to_trap(int pid, long request, int *status)
{
    if (syscall(SYS_ptrace, request, pid, 0, 0) < 0)
        return -errno;
    int r = ck_wait(pid, status);
    if (r < 0)
        return r;
    if (!WIFSTOPPED(*status) || (WSTOPSIG(*status) & 0x7f) != SIGTRAP || (*status >> 16) != 0)
        return 1;
    return 0;
}

/* Run one syscall inside a stopped tracee.
 *
 * `tmpl` is the register set the call starts from (the task's own saved
 * registers); rip is pointed at a `syscall` instruction at `site`, orig_rax
 * is -1 so the kernel does no restart fix-up on the way out of the stop.
 * The task single-steps over the instruction and stops again with SIGTRAP.
 *
 * Returns 0 and stores the syscall's return value in *result; -errno when a
 * ptrace request failed; 1 when the task stopped for another reason (then
 * *status holds the wait status and the caller decides what it means).
 * The caller puts the task's own registers back when it is done.
 */
int ck_inject(int pid, const void *tmpl, unsigned long site, long nr,
              const long *args, long *result, int *status)
{
    struct user_regs_struct regs;
    struct iovec iov = { &regs, sizeof(regs) };

    memcpy(&regs, tmpl, sizeof(regs));
    regs.rip = site;
    regs.rax = nr;
    regs.orig_rax = (unsigned long)-1;
    put_args(&regs, args);
    if (syscall(SYS_ptrace, PTRACE_SETREGSET, pid, (unsigned long)NT_PRSTATUS, &iov) < 0)
        return -errno;
    int r = resume_to_trap(pid, PTRACE_SINGLESTEP, status);
    if (r)
        return r;
    iov.iov_len = sizeof(regs);
    if (syscall(SYS_ptrace, PTRACE_GETREGSET, pid, (unsigned long)NT_PRSTATUS, &iov) < 0)
        return -errno;
    if (regs.rip != site + 2)
        return 1;
    *result = (long)regs.rax;
    return 0;
}

/* Create the task a restore fills in: a fork-like clone3 whose child gets
 * exactly `pid` (set_tid), asks to be traced and stops itself.  The child
 * runs only raw syscalls: it is a copy of the Python process and must not
 * touch libc state.  Returns the child's pid or -errno (EEXIST: pid taken),
 * once the child is stopped (its stop is left for the caller to wait for)
 * and traced with PTRACE_O_EXITKILL.
 *
 * A pyckpt that dies must take the child with it.  From the stop on,
 * PTRACE_O_EXITKILL does.  Before it, the child's first act is to ask for
 * SIGKILL when its parent dies (PR_SET_PDEATHSIG), then to see that its
 * parent is still pyckpt (a parent that died before the prctl sends nothing):
 * else it kills itself.  Not for CLONE_NEWPID (EINVAL): a namespace's init
 * cannot kill itself, nor tell its parent by getppid() (see
 * restorer._new_pidns_init). */
long ck_clone_stopped(int pid, unsigned long flags)
{
    pid_t tid = pid;
    struct clone_args args;
    long parent = syscall(SYS_getpid);
    if (flags & CLONE_NEWPID)
        return -EINVAL;
    memset(&args, 0, sizeof(args));
    args.flags = flags;
    args.exit_signal = SIGCHLD;
    if (pid > 0) {
        args.set_tid = (uint64_t)(uintptr_t)&tid;
        args.set_tid_size = 1;
    }
    long r = syscall(SYS_clone3, &args, sizeof(args));
    if (r < 0)
        return -errno;
    if (r == 0) {
        syscall(SYS_prctl, 1 /* PR_SET_PDEATHSIG */, SIGKILL, 0, 0, 0);
        if (syscall(SYS_getppid) != parent) { /* pyckpt died before the prctl */
            syscall(SYS_kill, syscall(SYS_getpid), SIGKILL);
            syscall(SYS_exit_group, 128 + SIGKILL);
        }
        syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);
        syscall(SYS_kill, syscall(SYS_getpid), SIGSTOP);
        /* Reached only if the tracer let the copy of pyckpt run: never do. */
        syscall(SYS_exit_group, 127);
    }
    siginfo_t info;
    while (syscall(SYS_waitid, P_PID, r, &info, WSTOPPED | WEXITED | WNOWAIT | __WALL, NULL) < 0)
        if (errno != EINTR)
            return r; /* the caller's wait tells what became of it */
    if (info.si_code == CLD_TRAPPED)
        syscall(SYS_ptrace, PTRACE_SETOPTIONS, r, 0, PTRACE_O_EXITKILL);
    return r;
}

/* ck_clone_exec: the task a restore fills in, born small.
 *
 * ck_clone_stopped's copy of pyckpt costs a copy of pyckpt's page tables
 * (~25 MiB resident) and then their unmapping in the task.  Here the task is
 * made with CLONE_VM (it shares pyckpt's memory for a few syscalls, on a
 * stack of its own) and at once replaces that memory by execveat() of a tiny
 * program held in a memfd (STUB): its address space is then the stub's one
 * page, a stack and the vDSO.  Asking to be traced first, it stops at the
 * exec's SIGTRAP before running any instruction of the stub, whose entry is
 * a `syscall; int3` the injector uses (the stop's rip).
 *
 * The child runs raw syscalls only (no libc, no errno: it shares pyckpt's
 * memory) with every signal blocked (a handler of pyckpt's must not run in
 * it); it asks for SIGKILL when pyckpt dies, checks that its parent is still
 * pyckpt, clears close-on-exec on the fds `keep` (what PREPARE opened for it:
 * pyckpt's fds are close-on-exec), asks to be traced, unblocks SIGTRAP and
 * execs.  Its parent-death signal survives the exec only when the exec
 * changes no credentials: the stub is used only by a root pyckpt whose
 * permitted and effective capabilities are its bounding set, without
 * securebits (else the exec could change its capabilities too).  Were it
 * left stopped by a pyckpt that died before PTRACE_O_EXITKILL, it could not
 * live on anyway: resumed, the stub runs `syscall` (read of 0 bytes: its
 * registers are zero after the exec) and then `int3`, and SIGTRAP kills it.
 *
 * Returns the child's pid, stopped at the exec (the stop left for the caller
 * to wait for) and traced with PTRACE_O_EXITKILL; -EEXIST when `pid` is
 * taken; -ENOTSUP when the stub cannot be used here (any child made is
 * killed and reaped: the caller makes the task with ck_clone_stopped, as
 * after another -errno of clone3). */
#define CK_STUB_CODE 176 /* after the ELF header and two program headers */
static const unsigned char CK_STUB_INSN[] = { 0x0f, 0x05, 0xcc }; /* syscall; int3 */

struct ck_exec_args {
    long parent;
    int stub_fd;
    int nkeep;
    const int *keep;
    unsigned long mask; /* while it execs: all but SIGTRAP blocked */
};

static inline long ck_raw(long n, long a, long b, long c, long d, long e)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "0"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return ret;
}

static __attribute__((noreturn, used)) void ck_exec_child(struct ck_exec_args *a)
{
    static const char empty[] = "";
    static const char name[] = "pyckpt-restore";
    const char *argv[] = { name, 0 };
    const char *envp[] = { 0 };
    ck_raw(SYS_prctl, 1 /* PR_SET_PDEATHSIG */, SIGKILL, 0, 0, 0);
    if (ck_raw(SYS_getppid, 0, 0, 0, 0, 0) != a->parent) { /* pyckpt died before the prctl */
        ck_raw(SYS_kill, ck_raw(SYS_getpid, 0, 0, 0, 0, 0), SIGKILL, 0, 0, 0);
        ck_raw(SYS_exit_group, 128 + SIGKILL, 0, 0, 0, 0);
    }
    for (int i = 0; i < a->nkeep; i++)
        ck_raw(SYS_fcntl, a->keep[i], F_SETFD, 0, 0, 0);
    if (ck_raw(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0, 0) != 0) /* traced already (strace -f) */
        ck_raw(SYS_exit_group, 127, 0, 0, 0, 0);
    ck_raw(SYS_rt_sigprocmask, SIG_SETMASK, (long)&a->mask, 0, 8, 0);
    ck_raw(SYS_execveat, a->stub_fd, (long)empty, (long)argv, (long)envp, AT_EMPTY_PATH);
    for (;;)
        ck_raw(SYS_exit_group, 127, 0, 0, 0, 0);
}

static long ck_clone3_exec(struct clone_args *ca, struct ck_exec_args *a)
{
    long ret;
    register long r12 __asm__("r12") = (long)a;
    register long r13 __asm__("r13") = (long)ck_exec_child;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "mov %%r12, %%rdi\n\t" /* the child, on its own stack */
        "and $-16, %%rsp\n\t"
        "call *%%r13\n\t"
        "ud2\n"
        "1:\n"
        : "=a"(ret)
        : "0"((long)SYS_clone3), "D"(ca), "S"(sizeof(*ca)), "r"(r12), "r"(r13)
        : "rcx", "r11", "memory");
    return ret;
}

/* ck_release_guard: while a restore lets the processes of a tree go one after
 * another (a PTRACE_DETACH per thread), a process that outlives pyckpt and makes
 * the release all or nothing.  It shares pyckpt's memory (CLONE_VM: a fork would
 * copy pyckpt's page tables), is born with every signal blocked, leaves pyckpt's
 * session (a kill of pyckpt's process group does not reach it), closes its copy
 * of the pipe's write end `wr` and reads `rd`.  A byte (the release is complete)
 * ends it; the end of the pipe without one (pyckpt died, SIGKILL included: its
 * files are closed as it exits, or it gave up) makes it SIGKILL every process of
 * `pidfds` first.  Raw syscalls only: it shares pyckpt's errno.
 * `area` (pyckpt's, kept until the guard is reaped) holds its arguments (4 bytes
 * a pidfd) and 8 KiB of stack.  Returns the guard's PID (pyckpt's child, to reap)
 * or -errno.  (What kills every process sharing pyckpt's memory at once, the OOM
 * killer choosing pyckpt, kills the guard too.) */
struct ck_rguard {
    int rd, wr, n;
    int pidfds[];
};

static int ck_rguard_main(void *arg)
{
    struct ck_rguard *g = arg;
    char c;
    long r;
    ck_raw(SYS_setsid, 0, 0, 0, 0, 0);
    ck_raw(SYS_close, g->wr, 0, 0, 0, 0);
    do
        r = ck_raw(SYS_read, g->rd, (long)&c, 1, 0, 0);
    while (r == -EINTR);
    if (r != 1)
        for (int i = 0; i < g->n; i++)
            ck_raw(SYS_pidfd_send_signal, g->pidfds[i], SIGKILL, 0, 0, 0);
    for (;;)
        ck_raw(SYS_exit, 0, 0, 0, 0, 0);
}

long ck_release_guard(int rd, int wr, const int *pidfds, int n, void *area, size_t size)
{
    size_t need = sizeof(struct ck_rguard) + (size_t)n * sizeof(int);
    if (n < 0 || size < need + 8192)
        return -EINVAL;
    struct ck_rguard *g = area;
    g->rd = rd;
    g->wr = wr;
    g->n = n;
    memcpy(g->pidfds, pidfds, (size_t)n * sizeof(int));
    char *top = (char *)(((uintptr_t)area + size) & ~(uintptr_t)15);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    long pid = clone(ck_rguard_main, top, CLONE_VM | SIGCHLD, g);
    long err = pid < 0 ? -errno : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return pid < 0 ? err : pid;
}

/* Would an exec keep this process's credentials, capabilities and parent-death
 * signal?  Root in every uid, egid == gid, no securebits, and the permitted and
 * effective sets equal to the bounding set, the inheritable one inside it (root
 * gets the bounding and inheritable sets at an exec). */
static int ck_exec_keeps_creds(void)
{
    uid_t r, e, s;
    gid_t gr, ge, gs;
    if (getresuid(&r, &e, &s) || r || e || s || getresgid(&gr, &ge, &gs) || gr != ge)
        return 0;
    if (syscall(SYS_prctl, PR_GET_SECUREBITS, 0, 0, 0, 0) != 0)
        return 0;
    struct { uint32_t version; int pid; } hdr = { 0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0 };
    struct { uint32_t effective, permitted, inheritable; } data[2];
    if (syscall(SYS_capget, &hdr, data))
        return 0;
    uint64_t eff = data[0].effective | (uint64_t)data[1].effective << 32;
    uint64_t prm = data[0].permitted | (uint64_t)data[1].permitted << 32;
    uint64_t inh = data[0].inheritable | (uint64_t)data[1].inheritable << 32;
    uint64_t bnd = 0;
    for (int cap = 0; cap < 64; cap++) {
        long in = syscall(SYS_prctl, PR_CAPBSET_READ, cap, 0, 0, 0);
        if (in < 0)
            break; /* EINVAL: past the last capability */
        if (in)
            bnd |= 1ULL << cap;
    }
    return eff == prm && prm == bnd && (inh & ~bnd) == 0; /* root's exec: bounding | inheritable */
}

static int ck_stub_fd(void)
{
    int fd = syscall(SYS_memfd_create, "pyckpt-stub", 1 /* MFD_CLOEXEC */ | 0x10 /* MFD_EXEC */);
    if (fd < 0 && errno == EINVAL) /* before Linux 6.3 */
        fd = syscall(SYS_memfd_create, "pyckpt-stub", 1);
    if (fd < 0)
        return -1;
    unsigned char elf[CK_STUB_CODE + sizeof(CK_STUB_INSN)];
    memset(elf, 0, sizeof(elf));
    Elf64_Ehdr *eh = (Elf64_Ehdr *)elf;
    Elf64_Phdr *ph = (Elf64_Phdr *)(elf + sizeof(*eh));
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_ident[EI_VERSION] = EV_CURRENT;
    eh->e_type = ET_DYN; /* placed where the kernel likes: the stop's rip says where */
    eh->e_machine = EM_X86_64;
    eh->e_version = EV_CURRENT;
    eh->e_entry = CK_STUB_CODE;
    eh->e_phoff = sizeof(*eh);
    eh->e_ehsize = sizeof(*eh);
    eh->e_phentsize = sizeof(*ph);
    eh->e_phnum = 2;
    ph[0].p_type = PT_LOAD;
    ph[0].p_flags = PF_R | PF_X;
    ph[0].p_filesz = ph[0].p_memsz = sizeof(elf);
    ph[0].p_align = 4096;
    ph[1].p_type = PT_GNU_STACK; /* no executable stack (nor READ_IMPLIES_EXEC) */
    ph[1].p_flags = PF_R | PF_W;
    ph[1].p_align = 16;
    memcpy(elf + CK_STUB_CODE, CK_STUB_INSN, sizeof(CK_STUB_INSN));
    if (write(fd, elf, sizeof(elf)) != (ssize_t)sizeof(elf)) {
        close(fd);
        return -1;
    }
    return fd;
}

static void ck_kill_reap(int child)
{
    int st;
    syscall(SYS_kill, child, SIGKILL);
    for (;;) {
        int r = waitpid(child, &st, __WALL);
        if (r < 0 && errno != EINTR)
            return;
        if (r == child && (WIFEXITED(st) || WIFSIGNALED(st)))
            return;
    }
}

long ck_clone_exec(int pid, const int *keep, int nkeep)
{
    pid_t tid = pid;
    if (pid <= 0 || !ck_exec_keeps_creds())
        return -ENOTSUP;
    int fd = ck_stub_fd();
    if (fd < 0)
        return -ENOTSUP;
    char stack[16384] __attribute__((aligned(64))); /* the child's until its exec */
    struct ck_exec_args a = { syscall(SYS_getpid), fd, nkeep, keep, ~(1UL << (SIGTRAP - 1)) };
    struct clone_args args;
    memset(&args, 0, sizeof(args));
    args.flags = CLONE_VM;
    args.exit_signal = SIGCHLD;
    args.stack = (uint64_t)(uintptr_t)stack;
    args.stack_size = sizeof(stack);
    args.set_tid = (uint64_t)(uintptr_t)&tid;
    args.set_tid_size = 1;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the child starts with every signal blocked */
    long r = ck_clone3_exec(&args, &a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r < 0) {
        close(fd);
        return r; /* -EEXIST, or the caller tries ck_clone_stopped */
    }
    /* Until its first stop or its end the child may run in pyckpt's memory, on
     * `stack`: nothing returns before. */
    siginfo_t info;
    for (;;) {
        memset(&info, 0, sizeof(info));
        if (syscall(SYS_waitid, P_PID, r, &info, WSTOPPED | WEXITED | WNOWAIT | __WALL, NULL) == 0)
            break;
        if (errno != EINTR) {
            ck_kill_reap(r);
            close(fd);
            return -ENOTSUP;
        }
    }
    close(fd);
    if (info.si_code == CLD_TRAPPED && info.si_status == SIGTRAP) {
        /* The exec's own SIGTRAP (sent by the task to itself), not one from elsewhere
         * before it: only then is the task in the stub's memory and not in pyckpt's. */
        siginfo_t si;
        if (syscall(SYS_ptrace, PTRACE_GETSIGINFO, r, 0, &si) == 0 && si.si_code == SI_USER
                && si.si_pid == r) {
            syscall(SYS_ptrace, PTRACE_SETOPTIONS, r, 0, PTRACE_O_EXITKILL);
            return r;
        }
    }
    ck_kill_reap(r);
    return -ENOTSUP;
}

/* The CPU this thread runs on now (sched_getcpu, through the vDSO): a restore pins
 * itself there (no migration) and the task it makes inherits it. */
int ck_getcpu(void)
{
    return sched_getcpu();
}

/* The VmFlags of each VMA in /proc/PID/smaps (`path`), as "START FLAGS\n" lines
 * (START in the file's lower-case hex, FLAGS its two-letter words as the file
 * has them) into `out`: a dump reads them in a thread beside its other work, and
 * here the whole read and search let the GIL go (in Python, the parse had to win
 * it back from the main thread).  Returns the length of the lines, which is more
 * than `cap` when they did not fit (then call again with that much), or -errno. */
long ck_smaps_flags(const char *path, char *out, long cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t size = 0, room = 1 << 18;
    char *text = malloc(room);
    long err = 0;
    for (;;) {
        if (!text) {
            err = -ENOMEM;
            break;
        }
        if (room - size < (1 << 16)) {
            char *more = realloc(text, room * 2);
            if (!more) {
                err = -ENOMEM;
                break;
            }
            text = more;
            room *= 2;
        }
        ssize_t r = read(fd, text + size, room - size);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = -errno;
            break;
        }
        if (r == 0)
            break;
        size += (size_t)r;
    }
    close(fd);
    if (err) {
        free(text);
        return err;
    }
    long n = 0;
    const char *start = NULL;
    size_t start_len = 0;
    for (size_t at = 0; at < size;) {
        const char *line = text + at;
        const char *nl = memchr(line, '\n', size - at);
        size_t len = nl ? (size_t)(nl - line) : size - at;
        at += len + 1;
        size_t h = 0;
        while (h < len && ((line[h] >= '0' && line[h] <= '9') || (line[h] >= 'a' && line[h] <= 'f')))
            h++;
        if (h && h < len && line[h] == '-') {  /* a VMA's first line: START-END ... */
            start = line;
            start_len = h;
        } else if (start && len >= 8 && memcmp(line, "VmFlags:", 8) == 0) {
            size_t f = 8, e = len;
            while (f < e && line[f] == ' ')
                f++;
            while (e > f && line[e - 1] == ' ')
                e--;
            long need = (long)(start_len + 1 + (e - f) + 1);
            if (n + need <= cap) {
                memcpy(out + n, start, start_len);
                out[n + start_len] = ' ';
                memcpy(out + n + start_len + 1, line + f, e - f);
                out[n + need - 1] = '\n';
            }
            n += need;
            start = NULL;
        }
    }
    free(text);
    return n;
}

/* process_mrelease(2) (Linux 5.15): free the memory of a process being killed (its
 * pidfd) in the caller, beside its own exit: 0 or -errno (ENOSYS before 5.15, EINVAL
 * when it is not dying). */
long ck_process_mrelease(int pidfd)
{
#ifndef SYS_process_mrelease
#define SYS_process_mrelease 448
#endif
    return syscall(SYS_process_mrelease, pidfd, 0) < 0 ? -errno : 0;
}

/* ck_uffd_fill: an eager restore's private anonymous pages, copied into the
 * stopped task by UFFDIO_COPY from `src` (pyckpt's mapping of pages.img, the
 * page cache) instead of read by the task into memory it populated first: the
 * kernel allocates each page and copies into it, without zeroing it first
 * (about 40 % less time here for a few MiB).  `uffd`: a userfaultfd of the
 * task (made by an injected call); `ranges` (start, length) the VMAs, each
 * registered for missing pages, filled, and unregistered again (also after an
 * error: the task is then killed by the caller anyway); `runs` (address,
 * length, offset in pages.img).  Returns 0 or -errno. */
static long uffd_register(int uffd, const unsigned long *ranges, long nranges, long *registered)
{
    struct uffdio_api api;
    memset(&api, 0, sizeof(api));
    api.api = UFFD_API;
    if (ioctl(uffd, UFFDIO_API, &api) < 0)
        return -errno;
    for (; *registered < nranges; (*registered)++) {
        struct uffdio_register reg;
        memset(&reg, 0, sizeof(reg));
        reg.range.start = ranges[2 * *registered];
        reg.range.len = ranges[2 * *registered + 1];
        reg.mode = UFFDIO_REGISTER_MODE_MISSING;
        if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
            return -errno;
    }
    return 0;
}

static long uffd_unregister(int uffd, const unsigned long *ranges, long registered, long err)
{
    for (long i = 0; i < registered; i++) {
        struct uffdio_range r = { ranges[2 * i], ranges[2 * i + 1] };
        if (ioctl(uffd, UFFDIO_UNREGISTER, &r) < 0 && !err)
            err = -errno;
    }
    return err;
}

/* UFFDIO_COPY of `len` bytes at `src` (pyckpt's memory) to `addr` of the task. */
static long uffd_copy(int uffd, unsigned long addr, const char *src, unsigned long len)
{
    unsigned long done = 0;
    int tries = 0;
    while (done < len) {
        struct uffdio_copy c;
        memset(&c, 0, sizeof(c));
        c.dst = addr + done;
        c.src = (unsigned long)(src + done);
        c.len = len - done;
        if (ioctl(uffd, UFFDIO_COPY, &c) == 0)
            return 0;
        if (c.copy > 0) {
            done += c.copy;
            continue;
        }
        if ((errno == EAGAIN || errno == EINTR) && ++tries < 1000)
            continue;
        return -errno;
    }
    return 0;
}

long ck_uffd_fill(int uffd, const unsigned long *ranges, long nranges, const char *src,
                  const unsigned long *runs, long nruns)
{
    long registered = 0;
    long err = uffd_register(uffd, ranges, nranges, &registered);
    for (long i = 0; !err && i < nruns; i++)
        err = uffd_copy(uffd, runs[3 * i], src + runs[3 * i + 2], runs[3 * i + 1]);
    return uffd_unregister(uffd, ranges, registered, err);
}

/* ck_uffd_fill's steps, for a copy made a part at a time (the caller moves its progress
 * bar between parts): ck_uffd_register every range (all, or none and -errno), then
 * ck_uffd_copy_runs for each part, then ck_uffd_unregister (closing the userfaultfd
 * unregisters what is left too).  A register and unregister per part instead cost
 * ~8 ms each for a 1 GiB VMA here. */
long ck_uffd_register(int uffd, const unsigned long *ranges, long nranges)
{
    long registered = 0;
    long err = uffd_register(uffd, ranges, nranges, &registered);
    return err ? uffd_unregister(uffd, ranges, registered, err) : 0;
}

long ck_uffd_copy_runs(int uffd, const char *src, const unsigned long *runs, long nruns)
{
    long err = 0;
    for (long i = 0; !err && i < nruns; i++)
        err = uffd_copy(uffd, runs[3 * i], src + runs[3 * i + 2], runs[3 * i + 1]);
    return err;
}

long ck_uffd_unregister(int uffd, const unsigned long *ranges, long nranges)
{
    return uffd_unregister(uffd, ranges, nranges, 0);
}

/* ck_uffd_fill with pages.img read through `buf` (`buflen` bytes, a multiple of the
 * page size) instead of mapped: runs that lie end to end in the file are read with
 * one pread as far as the buffer holds, then copied in.  A small restore's mapping
 * of pages.img cost about as much as the copy (its page tables made and torn down);
 * the buffer stays in the CPU's cache.  -EIO when the file is short. */
long ck_uffd_fill_read(int uffd, const unsigned long *ranges, long nranges, int fd,
                       const unsigned long *runs, long nruns, char *buf, unsigned long buflen)
{
    if (buflen < 4096 || buflen % 4096)
        return -EINVAL;
    long registered = 0;
    long err = uffd_register(uffd, ranges, nranges, &registered);
    long i = 0;
    unsigned long part = 0; /* bytes of run i already copied */
    while (!err && i < nruns) {
        /* runs i.. (from `part` into run i) that follow each other in the file */
        unsigned long off = runs[3 * i + 2] + part, want = 0;
        long j = i;
        unsigned long jpart = part;
        while (j < nruns && want < buflen && runs[3 * j + 2] + jpart == off + want) {
            unsigned long left = runs[3 * j + 1] - jpart, take = left < buflen - want ? left : buflen - want;
            want += take;
            if (take < left) {
                jpart += take;
                break;
            }
            j++;
            jpart = 0;
        }
        if (want == 0) { /* (a run of no bytes) */
            i++;
            part = 0;
            continue;
        }
        unsigned long got = 0;
        while (got < want) {
            ssize_t n = pread(fd, buf + got, want - got, (off_t)(off + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                err = n < 0 ? -errno : -EIO;
                break;
            }
            got += (unsigned long)n;
        }
        /* copy what was read back into the runs it belongs to */
        unsigned long at = 0;
        while (!err && at < want) {
            unsigned long left = runs[3 * i + 1] - part, take = left < want - at ? left : want - at;
            err = uffd_copy(uffd, runs[3 * i] + part, buf + at, take);
            at += take;
            part += take;
            if (part == runs[3 * i + 1]) {
                i++;
                part = 0;
            }
        }
    }
    return uffd_unregister(uffd, ranges, registered, err);
}

/* The init of a PID namespace made by `restore --new-pidns`: a stopped copy of
 * pyckpt whose registers are pointed here before it is released.  The
 * restored process is its child.  It closes every fd, resets every signal to its default, reaps
 * children until none is left, and exits: that ends the namespace with the
 * last process in it.  Raw syscalls only. */
void ck_init_loop(void)
{
    unsigned long act[4] = { 0, 0, 0, 0 }; /* SIG_DFL, no flags, no mask */
    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, act, NULL, 8);
    unsigned long none = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8);
    /* Hold nothing of pyckpt's: no fds (a pipe it kept open would never see
     * end-of-file), no working directory on a mount. */
    syscall(SYS_close_range, 0, ~0U, 0);
    syscall(SYS_chdir, "/");
    for (;;) {
        int status;
        if (syscall(SYS_wait4, -1, &status, __WALL, NULL) < 0 && errno == ECHILD)
            syscall(SYS_exit_group, 0);
    }
}

/* PAGEMAP_SCAN (Linux 6.7; linux/fs.h there): ranges of pages by category. */
struct ck_page_region {
    uint64_t start, end, categories;
};
struct ck_pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define CK_PAGEMAP_SCAN _IOWR('f', 16, struct ck_pm_scan_arg)
#define CK_PAGE_IS_FILE (1 << 2)
#define CK_PAGE_IS_PRESENT (1 << 3)
#define CK_PAGE_IS_SWAPPED (1 << 4)

/* ck_pagemap_runs through PAGEMAP_SCAN: the kernel reports ranges, not one entry a
 * page (about 4x faster on a dense GiB here).  -ENOTTY on a kernel without it. */
static long scan_runs(int pagemap_fd, unsigned long start, unsigned long npages, int mode,
                      unsigned long *out, long max_runs, unsigned long *stored)
{
    enum { NREG = 512 };
    struct ck_page_region reg[NREG];
    struct ck_pm_scan_arg arg;
    unsigned long end = start + npages * 4096UL, pos = start, total = 0;
    long nruns = 0;
    while (pos < end) {
        memset(&arg, 0, sizeof(arg));
        arg.size = sizeof(arg);
        arg.start = pos;
        arg.end = end;
        arg.vec = (uint64_t)(uintptr_t)reg;
        arg.vec_len = NREG;
        arg.category_anyof_mask = CK_PAGE_IS_PRESENT | CK_PAGE_IS_SWAPPED;
        if (mode == 1) { /* and not a page-cache page (a swapped one never is) */
            arg.category_inverted = CK_PAGE_IS_FILE;
            arg.category_mask = CK_PAGE_IS_FILE;
        }
        arg.return_mask = CK_PAGE_IS_PRESENT | CK_PAGE_IS_SWAPPED;
        long n = ioctl(pagemap_fd, CK_PAGEMAP_SCAN, &arg);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        for (long i = 0; i < n; i++) {
            unsigned long first = (reg[i].start - start) / 4096, count = (reg[i].end - reg[i].start) / 4096;
            if (nruns && out[2 * nruns - 2] + out[2 * nruns - 1] == first) {
                out[2 * nruns - 1] += count;
            } else {
                if (nruns >= max_runs)
                    return -ENOSPC;
                out[2 * nruns] = first;
                out[2 * nruns + 1] = count;
                nruns++;
            }
            total += count;
        }
        if (arg.walk_end <= pos)
            return -EIO;
        pos = arg.walk_end;
    }
    *stored = total;
    return nruns;
}

/* Scan /proc/PID/pagemap for `npages` pages from `start` and return runs of
 * pages whose content must be stored, as (first page index, page count)
 * pairs in `out` (room for `max_runs` pairs).
 *
 * mode 0: private anonymous memory — present or swapped pages.
 * mode 1: private file mapping — swapped pages, and present pages that are
 *         not page-cache pages (bit 61 clear: copy-on-write copies).
 * Returns the number of runs, -ENOSPC when `out` is too small, or -errno.
 * *stored receives the number of pages in all runs.
 */
long ck_pagemap_runs(int pagemap_fd, unsigned long start, unsigned long npages,
                     int mode, unsigned long *out, long max_runs, unsigned long *stored)
{
    enum { CHUNK = 8192 };
    uint64_t ents[CHUNK];
    long nruns = 0;
    unsigned long run_start = 0, run_len = 0, total = 0;

    long fast = scan_runs(pagemap_fd, start, npages, mode, out, max_runs, stored);
    if (fast != -ENOTTY && fast != -EINVAL)
        return fast;

    for (unsigned long done = 0; done < npages;) {
        unsigned long n = npages - done;
        if (n > CHUNK)
            n = CHUNK;
        off_t off = (off_t)((start >> 12) + done) * 8;
        ssize_t got = pread(pagemap_fd, ents, n * 8, off);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (got == 0)
            return -EIO;
        n = (unsigned long)got / 8;
        for (unsigned long i = 0; i < n; i++) {
            uint64_t e = ents[i];
            int present = (e >> 63) & 1, swapped = (e >> 62) & 1, filepg = (e >> 61) & 1;
            int keep;
            if (mode == 1)
                keep = swapped || (present && !filepg);
            else
                keep = present || swapped;
            unsigned long idx = done + i;
            if (keep) {
                if (run_len && run_start + run_len == idx) {
                    run_len++;
                } else {
                    if (run_len) {
                        if (nruns >= max_runs)
                            return -ENOSPC;
                        out[2 * nruns] = run_start;
                        out[2 * nruns + 1] = run_len;
                        nruns++;
                    }
                    run_start = idx;
                    run_len = 1;
                }
                total++;
            }
        }
        done += n;
    }
    if (run_len) {
        if (nruns >= max_runs)
            return -ENOSPC;
        out[2 * nruns] = run_start;
        out[2 * nruns + 1] = run_len;
        nruns++;
    }
    *stored = total;
    return nruns;
}

/* process_vm_readv of [addr, addr+len) into buf, looping over partial reads.
 * Returns bytes read (== len on success) or -errno. */
long ck_vm_read(int pid, unsigned long addr, void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        struct iovec local = { (char *)buf + done, len - done };
        struct iovec remote = { (void *)(addr + done), len - done };
        ssize_t r = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return done ? (long)done : -errno;
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (long)done;
}

/* Bench reference (the dump floor): copy [addr, addr+len) of a process into
 * a file with process_vm_readv and write, through one reused buffer. */
long ck_vm_read_to_file(int pid, unsigned long addr, size_t len, int fd, void *buf, size_t buflen)
{
    size_t done = 0;
    while (done < len) {
        size_t n = len - done < buflen ? len - done : buflen;
        long r = ck_vm_read(pid, addr + done, buf, n);
        if (r < 0)
            return r;
        if ((size_t)r != n)
            return -EFAULT;
        for (size_t w = 0; w < n;) {
            ssize_t k = write(fd, (char *)buf + w, n - w);
            if (k < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            w += (size_t)k;
        }
        done += n;
    }
    return (long)done;
}

/* Which pages of `a` equal those of `b` (both `len` bytes, `len` a multiple of
 * `page`): flags[i] = 1 for an equal page, else 0.  Returns the number of pages.
 * (An incremental dump stores only the pages of a piece that changed since the
 * parent image: memory.PageCopier._against_parent.) */
long ck_same_pages(const void *a, const void *b, size_t len, size_t page, unsigned char *flags)
{
    long n = 0;
    for (size_t at = 0; at + page <= len; at += page)
        flags[n++] = memcmp((const char *)a + at, (const char *)b + at, page) == 0;
    return n;
}

/* A dump's copy of one buffer's worth of memory (memory.PageCopier): `nsegs`
 * segments of process `pid`, each (address, length, place in `buf`, flags) in
 * `segs`, read with process_vm_readv, up to 1024 a call (one call for the dozens
 * of runs of a page or two a process has, where each call costs a few us), then
 * cut into pieces on the `piece` grid of addresses: for the k-th piece (counted
 * over the segments in order) zero[k] = 1 if the segment's flags have bit 0 (zero
 * pieces need not be stored) and the piece holds only zeros, else 0 and
 * digests[k] = hash_fn(piece) (python-xxhash's XXH3, memory.hash_fn; 0: none,
 * the caller hashes).  Flags bit
 * 1: the segment is in `buf` already (read another way), not to be read.  At most
 * `max_pieces` pieces.  Returns the number of segments read whole and sorted out:
 * nsegs, or less where a read came short (the segment it returns is the first
 * not read; the caller reads it alone to learn why), or -E2BIG. */
#define CK_SEG_ZERO_OK 1
#define CK_SEG_READ 2
typedef unsigned long long (*ck_hash_fn)(const void *, size_t);
long ck_read_pieces(int pid, const unsigned long *segs, long nsegs, char *buf, unsigned long piece,
                    unsigned long hash_fn, unsigned char *zero, unsigned long long *digests,
                    long max_pieces)
{
    struct iovec local[1024], remote[1024];
    long ok = 0;  /* segments read whole */
    while (ok < nsegs) {
        long n = 0, first = ok;
        size_t want = 0;
        for (long i = ok; i < nsegs && n < 1024; i++) {
            const unsigned long *g = segs + 4 * i;
            if (g[3] & CK_SEG_READ) {
                if (n)
                    break;  /* (reads stay in order: it is counted once those before it are) */
                first = ++ok;
                continue;
            }
            local[n].iov_base = buf + g[2];
            local[n].iov_len = g[1];
            remote[n].iov_base = (void *)g[0];
            remote[n].iov_len = g[1];
            want += g[1];
            n++;
        }
        if (!n)
            continue;
        ssize_t r;
        do
            r = process_vm_readv(pid, local, (unsigned long)n, remote, (unsigned long)n, 0);
        while (r < 0 && errno == EINTR);
        if (r == (ssize_t)want) {
            ok = first + n;
            continue;
        }
        /* short (or failed): count the segments that came whole; the next is the caller's */
        size_t got = r > 0 ? (size_t)r : 0;
        for (long i = 0; i < n && got >= local[i].iov_len; i++) {
            got -= local[i].iov_len;
            ok = first + i + 1;
        }
        break;
    }
    long k = 0;
    ck_hash_fn fn = (ck_hash_fn)hash_fn;
    for (long i = 0; i < ok; i++) {
        const unsigned long *g = segs + 4 * i;
        unsigned long addr = g[0], len = g[1], done = 0;
        const char *p = buf + g[2];
        while (done < len) {
            unsigned long stop = ((addr + done) & ~(piece - 1)) + piece - addr;
            if (stop > len)
                stop = len;
            if (k >= max_pieces)
                return -E2BIG;
            int z = 0;
            if (g[3] & CK_SEG_ZERO_OK) {
                const uint64_t *w = (const uint64_t *)(p + done), *end = (const uint64_t *)(p + stop);
                z = 1;
                for (; w + 8 <= end; w += 8)
                    if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) {
                        z = 0;
                        break;
                    }
                for (; z && w < end; w++)
                    if (*w)
                        z = 0;
            }
            zero[k] = (unsigned char)z;
            digests[k] = z || !fn ? 0 : fn(p + done, stop - done);
            k++;
            done = stop;
        }
    }
    return ok;
}

/* sync_file_range(2): start (and with the WAIT flags wait for) writeback of a
 * range of a file.  0 or -errno. */
int ck_sync_range(int fd, long offset, long len, unsigned flags)
{
    for (;;) {
        if (sync_file_range(fd, offset, len, flags) == 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

/* fallocate(2) with `mode` (FALLOC_FL_KEEP_SIZE: blocks reserved past the end, the
 * size left to the writes).  0 or -errno. */
int ck_fallocate(int fd, int mode, long offset, long len)
{
    for (;;) {
        if (fallocate(fd, mode, offset, len) == 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif
#ifndef PTRACE_SETSIGMASK
#define PTRACE_SETSIGMASK 0x420b
#endif

/* Give a task its own registers and signal mask back and park it in an
 * interrupt stop (PTRACE_EVENT_STOP).  A task parked there comes to no harm
 * if its tracer dies: the kernel detaches it and it carries on as if it had
 * never been stopped (an interrupted syscall is restarted as usual).  Any
 * other stop is not safe to be left in: a SIGTRAP signal-delivery-stop would
 * deliver the SIGTRAP once the tracer is gone, and after a single-step the
 * trap flag stays set until a resume that is not a step — the
 * PTRACE_CONT(0) here cancels the pending SIGTRAP and clears the flag, and
 * the PTRACE_INTERRUPT before it stops the task again before it runs a
 * single instruction of its own. */
int ck_park(int pid, const void *own, unsigned long own_mask, int *status)
{
    struct iovec iov = { (void *)own, sizeof(struct user_regs_struct) };
    /* The mask first: a task still holding a trampoline's registers (see
     * ck_tramp_call) restores its own mask itself if pyckpt dies in between. */
    if (syscall(SYS_ptrace, PTRACE_SETSIGMASK, pid, 8UL, &own_mask) < 0)
        return -errno;
    if (syscall(SYS_ptrace, PTRACE_SETREGSET, pid, (unsigned long)NT_PRSTATUS, &iov) < 0)
        return -errno;
    if (syscall(SYS_ptrace, PTRACE_INTERRUPT, pid, 0, 0) < 0)
        return -errno;
    if (syscall(SYS_ptrace, PTRACE_CONT, pid, 0, 0) < 0)
        return -errno;
    int r = ck_wait(pid, status);
    if (r < 0)
        return r;
    if (!WIFSTOPPED(*status) || (*status >> 16) != PTRACE_EVENT_STOP)
        return 1;
    return 0;
}

/* ck_inject for a task that must come to no harm whenever pyckpt dies (a
 * dump's target).  The task holds foreign registers, an all-blocked signal
 * mask (nothing may interrupt the step) and the trap flag only for the call
 * itself; before and after it sits parked with its own (ck_park).  Returns
 * as ck_inject does; 2 when the call ran but the task could not be parked. */
int ck_inject_held(int pid, const void *own, unsigned long own_mask, unsigned long site,
                   long nr, const long *args, long *result, int *status)
{
    unsigned long all = ~0UL;
    if (syscall(SYS_ptrace, PTRACE_SETSIGMASK, pid, 8UL, &all) < 0)
        return -errno;
    int r = ck_inject(pid, own, site, nr, args, result, status);
    if (r < 0 || r == 1) {
        int st;
        ck_park(pid, own, own_mask, &st);  /* best effort: the call already failed */
        return r;
    }
    int p = ck_park(pid, own, own_mask, status);
    if (p < 0)
        return p;
    return p == 1 ? 2 : 0;
}

/* Run syscall `nr` in a task parked at a sigreturn gadget (see
 * inject/trampoline.py): `gadget` is the address of `mov $15, %eax; syscall`
 * (rt_sigreturn) in the task, and `sp` points just past the return slot of a
 * signal frame holding the task's own registers, mask and FPU state.  The
 * task is stopped either in an interrupt stop or at a syscall-exit, about to
 * run the gadget.  Resumed under PTRACE_SYSCALL it stops at the entry of that
 * rt_sigreturn, which is turned into the call (orig_rax, arguments; rip back
 * to the gadget), and stops again at the call's exit, about to run the
 * gadget again.  No single-step, no trap flag, no SIGTRAP to deliver: a
 * pyckpt that dies at any moment leaves a task that finishes the call, runs
 * rt_sigreturn and is back in its own state.  Returns as ck_inject does. */
int ck_tramp_call_many(int n, const int *pids, const void *const *tmpls, const unsigned long *gadgets,
                       const unsigned long *sps, const long *nrs, const long *args,
                       long *results, int *statuses, int *rcs);

int ck_tramp_call(int pid, const void *tmpl, unsigned long gadget, unsigned long sp, long nr,
                  const long *args, long *result, int *status)
{
    int rc;
    ck_tramp_call_many(1, &pid, &tmpl, &gadget, &sp, &nr, args, result, status, &rc);
    return rc;
}

/* ck_tramp_call in `n` parked tasks at once (threads of one process, say), task
 * i running call nrs[i] with the six arguments at args[6 * i]: every task is
 * resumed before any is waited for, so their stops overlap instead of following
 * one another (each call wakes its task twice and pyckpt twice; one thread after
 * another, a dump's dozen threads spent ~0.12 ms a call on that).  rcs[i] gets
 * what ck_tramp_call would return for task i, and results[i] / statuses[i] what it
 * would store; a task whose step failed takes no further step.  Returns how many
 * failed. */
int ck_tramp_call_many(int n, const int *pids, const void *const *tmpls, const unsigned long *gadgets,
                       const unsigned long *sps, const long *nrs, const long *args,
                       long *results, int *statuses, int *rcs)
{
    struct user_regs_struct regs;
    struct iovec iov = { &regs, sizeof(regs) };
    int failed = 0;

    for (int i = 0; i < n; i++)
        rcs[i] = 0;
    for (int stop = 0; stop < 2; stop++) {  /* the gadget's syscall-entry, then the call's exit */
        for (int i = 0; i < n; i++) {
            if (rcs[i])
                continue;
            if (stop == 1) {
                memcpy(&regs, tmpls[i], sizeof(regs));
                regs.rip = gadgets[i];
                regs.rsp = sps[i];
                regs.orig_rax = nrs[i];
                regs.rax = (unsigned long)-ENOSYS;
                put_args(&regs, args + 6 * i);
                iov.iov_len = sizeof(regs);
                if (syscall(SYS_ptrace, PTRACE_SETREGSET, pids[i], (unsigned long)NT_PRSTATUS, &iov) < 0) {
                    rcs[i] = -errno;
                    continue;
                }
            }
            if (syscall(SYS_ptrace, PTRACE_SYSCALL, pids[i], 0, 0) < 0)
                rcs[i] = -errno;
        }
        for (int i = 0; i < n; i++) {
            if (rcs[i])
                continue;
            int r = ck_wait(pids[i], &statuses[i]);
            int st = statuses[i];
            if (r < 0) {
                rcs[i] = r;
                continue;
            }
            if (!WIFSTOPPED(st) || (WSTOPSIG(st) & 0x7f) != SIGTRAP || (st >> 16) != 0) {
                rcs[i] = 1;
                continue;
            }
            iov.iov_len = sizeof(regs);
            if (syscall(SYS_ptrace, PTRACE_GETREGSET, pids[i], (unsigned long)NT_PRSTATUS, &iov) < 0) {
                rcs[i] = -errno;
                continue;
            }
            if (stop == 0 && regs.orig_rax != 15)
                rcs[i] = 1;  /* not the gadget's rt_sigreturn */
            else if (stop == 1 && regs.rip != gadgets[i])
                rcs[i] = 1;
            else if (stop == 1)
                results[i] = (long)regs.rax;
        }
    }
    for (int i = 0; i < n; i++)
        failed += rcs[i] != 0;
    return failed;
}

/* How much of a standard-format XSAVE area holds the state components in
 * `mask` (CPUID leaf 0xD): the size a signal frame's FPU state must have. */
unsigned ck_xsave_size(unsigned long mask)
{
    unsigned end = 512 + 64;  /* legacy area and XSAVE header */
    for (unsigned i = 2; i < 63; i++) {
        if (!(mask >> i & 1))
            continue;
        unsigned a, b, c, d;
        __cpuid_count(0xd, i, a, b, c, d);
        (void)c;
        (void)d;
        if (a && b + a > end)
            end = b + a;
    }
    return end;
}

/* ---- lazy restore (pyckpt/lazy.py) ------------------------------------------
 *
 * A lazily restored process has its private anonymous memory registered with a
 * userfaultfd (MISSING mode) instead of filled.  ck_lazy_register sets the uffd
 * up; ck_lazy_start forks the handler that fills it: a process detached from
 * pyckpt (forked twice, its own session, holding only the uffd, pages.img, a
 * pidfd of the process and its guard's socket) that answers each fault with
 * UFFDIO_COPY of the window around it straight from a mapping of pages.img (the
 * page cache), pushes the rest in order in between, follows fork, MADV_DONTNEED,
 * munmap and mremap (events), and exits once every page is in.  Its guard (its
 * child, own session) holds a copy of every uffd and a pidfd of every process it
 * serves: when the handler ends without saying it is done (killed, a read error),
 * the guard SIGKILLs them all, waits until they are gone, and exits.  It has two
 * guards, each holding everything: one killed, the other still guards.  The
 * handler polls its sockets to them with the uffds: when a guard ends first, it
 * forks a new one at once (which has every uffd and pidfd from the fork on, in its
 * fd table: nothing to send again); while one is missing (could not be started),
 * it pushes every page still to come (trying again every 10 ms) and exits once all
 * are in.  A fatal error kills the processes from the handler itself too, before
 * it exits.
 * Each piece of pages.img it serves (a stored run's checksummed piece: offset,
 * length, xxh3) is checked the first time any of it is to be copied, before the
 * UFFDIO_COPY: a piece that fails its checksum is never copied; every process
 * served is killed and the handler exits with status 6.  With the push on, a
 * thread (lz_ahead) checks pieces ahead of it once pyckpt says the processes run.  Why it gave up (or, from
 * a guard, that the handler ended first) is said once, by the first to see it: on
 * the report socket pyckpt holds (lazy.Handler.wait), on stderr if that is a
 * terminal or a regular file, and in the kernel log (/dev/kmsg).
 * Raw system calls and mmap-backed arrays only after the fork: no malloc. */
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <linux/userfaultfd.h>

#define LZ_PAGE 4096UL
#define LZ_FEATURES (UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | \
                     UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP)
#define LZ_MAX_UF 1024
#define LZ_MAX_PIDS 4096

/* UFFDIO_API with the events lazy restore follows, then UFFDIO_REGISTER
 * (MISSING) over each of the `n` (start, length) ranges.  0 or -errno. */
long ck_lazy_register(int uffd, const unsigned long *ranges, long n)
{
    struct uffdio_api api;
    memset(&api, 0, sizeof(api));
    api.api = UFFD_API;
    api.features = LZ_FEATURES;
    if (ioctl(uffd, UFFDIO_API, &api) < 0)
        return -errno;
    for (long i = 0; i < n; i++) {
        struct uffdio_register reg;
        memset(&reg, 0, sizeof(reg));
        reg.range.start = ranges[2 * i];
        reg.range.len = ranges[2 * i + 1];
        reg.mode = UFFDIO_REGISTER_MODE_MISSING;
        if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
            return -errno;
        if (!(reg.ioctls & (1ULL << _UFFDIO_COPY)))
            return -EOPNOTSUPP;
    }
    return 0;
}

struct lz_ext { unsigned long addr, len, off; };  /* pages still to come: memory, pages.img */
/* sorted extents; `v` may run ahead of its mapping `mem` (extents taken from the front) */
struct lz_vec { struct lz_ext *v; long n, cap; struct lz_ext *mem; long memcap; };
struct lz_uf {
    int fd, pidfd, pid, gone;
    int ppid;  /* a child forked while lazy whose PID is not known yet: its parent's */
    struct lz_vec ext;
};
struct lz_fault { int uf; unsigned long addr; };

static char *lz_map;  /* pages.img, mapped read-only */
#define LZ_GUARDS 2  /* each holds everything: one killed, the other still guards */
static int lz_socks[LZ_GUARDS] = { -1, -1 };  /* to the guards */
static struct lz_uf *lz_ufs;
static long lz_nuf;
static int *lz_seen;  /* every PID already known or sent to the guard */
static long lz_nseen;
static struct lz_fault *lz_deferred;  /* faults to answer once pending events are read */
static long lz_ndeferred;
static long lz_guard_pids[LZ_GUARDS];
static int lz_kill[LZ_MAX_PIDS];  /* every pidfd the guard is to kill (held open here too) */
static int lz_nkill;
static int lz_pages_fd = -1, lz_status_fd = -1;  /* not for a guard */
static long lz_guard_try;  /* ms of the last try to start a guard (when one is missing) */
static long lz_guard_gen[LZ_GUARDS];  /* started in a slot: an event polled on an older one is stale */
static long lz_last_look;  /* ms (CLOCK_MONOTONIC) of the last look for forked children */
typedef unsigned long long (*lz_hash_fn)(const void *, size_t);
static lz_hash_fn lz_hash;  /* xxh3 (python-xxhash's, in this address space); NULL: checked up front */
/* The stored runs served, sorted by offset in pages.img: (offset, length, address,
 * digests, first digest's index in lz_digests).  One digest: the whole run is one
 * piece; more: one a piece of the run cut on the lz_piece grid of addresses. */
static const unsigned long *lz_runs;
static long lz_nruns;
static const unsigned long *lz_digests;
static long lz_ndigests;
static unsigned long lz_piece;
static unsigned char *lz_ok;  /* piece (digest) i checked */
static int lz_report_fd = -1;  /* the report socket (pyckpt holds the other end) */
static int lz_stderr;  /* fd 2 kept (a terminal or a regular file) */
static int *lz_reported;  /* in a page shared with the guards: the reason was said */
static long lz_handler_pid;
static int lz_main_pid;  /* the restored process */

static void *lz_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static long lz_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000L + now.tv_nsec / 1000000L;
}

/* SIGKILL every process served and wait until each is gone (its pidfd readable). */
static void lz_kill_all(const int *pidfds, int n)
{
    for (int i = 0; i < n; i++)
        syscall(SYS_pidfd_send_signal, pidfds[i], SIGKILL, NULL, 0);
    for (int i = 0; i < n; i++) {
        struct pollfd p = { pidfds[i], POLLIN, 0 };
        while (poll(&p, 1, -1) < 0 && errno == EINTR)
            ;
    }
}

/* Say `msg` (one line, no newline) where the user can see it: the report socket
 * (after a byte saying its `kind`: 'I' the image is bad, 'E' anything else),
 * stderr (if kept), the kernel log; only the first of the handler and its guards
 * to give a reason says it (`lz_reported`, shared). */
static void lz_say(char kind, const char *msg)
{
    if (lz_reported && __atomic_exchange_n(lz_reported, 1, __ATOMIC_SEQ_CST))
        return;
    char buf[640];
    int n = snprintf(buf, sizeof(buf), "pyckpt lazy restore: %s\n", msg);
    if (n <= 0)
        return;
    if (n >= (int)sizeof(buf))
        n = (int)sizeof(buf) - 1;
    size_t head = sizeof("pyckpt lazy restore: ") - 1;
    if (lz_report_fd >= 0) {
        char said[640];
        said[0] = kind;
        memcpy(said + 1, buf + head, (size_t)n - 1 - head);
        send(lz_report_fd, said, (size_t)n - head, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    if (lz_stderr && write(2, buf, (size_t)n) < 0) { /* nowhere else to say it */ }
    int k = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
    if (k >= 0) {
        char line[700];
        int m = snprintf(line, sizeof(line), "<3>pyckpt-lazy[%ld]: %s", (long)syscall(SYS_getpid),
                         buf + head);
        if (m > 0 && write(k, line, (size_t)(m < (int)sizeof(line) ? m : (int)sizeof(line) - 1)) < 0) { }
        close(k);
    }
}

/* Give up: every process served is killed — by the handler itself, and by the
 * guards (seeing the socket close without 'D') — before any uffd is closed; then
 * `msg` is said and the handler exits with `status`. */
static void lz_fatal(int status, char kind, const char *msg)
{
    lz_kill_all(lz_kill, lz_nkill);
    lz_say(kind, msg);
    syscall(SYS_exit_group, status);
}

static void lz_die_as(char kind, const char *what, long err)
{
    char buf[400];
    snprintf(buf, sizeof(buf), "page handler %ld of process %d: %s: %s; the processes it served "
             "were killed (their memory could not be completed)", lz_handler_pid, lz_main_pid, what,
             strerror((int)err));
    lz_fatal(3, kind, buf);
}

static void lz_die(const char *what, long err)
{
    lz_die_as('E', what, err);
}

/* pages.img cut shorter under the handler's mapping: a read error. */
static void lz_sigbus(int sig)
{
    (void)sig;
    lz_die_as('I', "reading pages.img failed (the file was cut shorter?)", EIO);
}

/* The processes killed (status 6), and why: `what` at offset `at` of pages.img. */
static void lz_bad(unsigned long at, const char *what)
{
    char path[256], msg[560];
    ssize_t n = readlink("/proc/self/fd/4", path, sizeof(path) - 1);  /* pages.img */
    path[n > 0 ? n : 0] = 0;
    snprintf(msg, sizeof(msg), "pages at offset %lu of %s %s: the lazily restored process %d, and "
             "what it forked, were killed before reading them (page handler %ld)", at,
             n > 0 ? path : "pages.img", what, lz_main_pid, lz_handler_pid);
    lz_fatal(6, 'I', msg);
}

/* Check every piece overlapping [off, off + len) of pages.img that is not checked
 * yet.  A byte in no stored run, or a piece that fails its checksum: the processes
 * are killed (status 6), nothing is copied. */
static void lz_verify(unsigned long off, unsigned long len)
{
    if (!lz_hash)
        return;
    unsigned long at = off, end = off + len;
    while (at < end) {
        long lo = 0, hi = lz_nruns;  /* the last run starting at or before `at` */
        while (lo < hi) {
            long mid = (lo + hi) / 2;
            if (lz_runs[5 * mid] <= at)
                lo = mid + 1;
            else
                hi = mid;
        }
        const unsigned long *r = lo > 0 ? &lz_runs[5 * (lo - 1)] : NULL;
        if (!r || r[0] + r[1] <= at)
            lz_bad(at, "have no checksum (the image is damaged)");
        unsigned long ro = r[0], rl = r[1], ra = r[2], nd = r[3], po = ro, pl = rl, k = r[4];
        if (nd > 1) {  /* the piece of the grid that holds `at` */
            unsigned long a = ra + (at - ro), line = a & ~(lz_piece - 1);
            unsigned long ps = line > ra ? line : ra, pe = line + lz_piece < ra + rl ? line + lz_piece : ra + rl;
            unsigned long idx = (line - (ra & ~(lz_piece - 1))) / lz_piece;
            if (idx >= nd)
                lz_bad(at, "have no checksum (the image is damaged)");
            k += idx;
            po = ro + (ps - ra);
            pl = pe - ps;
        }
        if (k >= (unsigned long)lz_ndigests)
            lz_bad(at, "have no checksum (the image is damaged)");
        unsigned char ok = __atomic_load_n(&lz_ok[k], __ATOMIC_ACQUIRE);
        if (ok == 0)
            ok = lz_hash(lz_map + po, pl) == lz_digests[k] ? 1 : 2;
        if (ok != 1)
            lz_bad(po, "fail their checksum (the image is corrupted)");
        __atomic_store_n(&lz_ok[k], 1, __ATOMIC_RELEASE);
        at = po + pl;
    }
}

/* The thread that checks the pieces ahead of the background push (lazy=True), on
 * the other CPU: each piece in order of offset, marked 1 (good) or 2 (bad: the
 * handler kills the processes when it is to be served, as if it had found it).
 * Hashing only: no call that could set errno (shared with the handler's thread). */
static void lz_ahead_one(unsigned long po, unsigned long pl, unsigned long k)
{
    if (k < (unsigned long)lz_ndigests && !__atomic_load_n(&lz_ok[k], __ATOMIC_ACQUIRE))
        __atomic_store_n(&lz_ok[k], lz_hash(lz_map + po, pl) == lz_digests[k] ? 1 : 2, __ATOMIC_RELEASE);
}

static int lz_prefetch, lz_ahead_started, lz_report_quiet;
static int lz_ahead(void *arg);

/* Start lz_ahead (lazy=True) once pyckpt said the processes run ('R' on the report
 * socket) or is gone: not earlier, where it would take a CPU from the restore. */
static void lz_start_ahead(void)
{
    if (lz_ahead_started || !lz_prefetch || !lz_hash)
        return;
    lz_ahead_started = 1;
    size_t stack = 256 << 10;
    char *st = lz_alloc(stack);
    if (st)  /* (else every piece is checked when served, as without it) */
        clone(lz_ahead, st + stack, CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
              CLONE_SYSVSEM, NULL);
}

static int lz_ahead(void *arg)
{
    (void)arg;
    for (long i = 0; i < lz_nruns; i++) {
        const unsigned long *r = &lz_runs[5 * i];
        unsigned long ro = r[0], rl = r[1], ra = r[2], nd = r[3], k = r[4];
        if (nd <= 1) {
            lz_ahead_one(ro, rl, k);
            continue;
        }
        unsigned long line = ra & ~(lz_piece - 1);  /* as lz_verify cuts them */
        for (unsigned long j = 0; j < nd; j++, line += lz_piece) {
            unsigned long ps = line > ra ? line : ra, pe = line + lz_piece < ra + rl ? line + lz_piece : ra + rl;
            if (ps >= pe)
                break;
            lz_ahead_one(ro + (ps - ra), pe - ps, k + j);
        }
    }
    return 0;
}

static int lz_reserve(struct lz_vec *x, long need)
{
    if (need <= x->cap)
        return 0;
    long cap = x->cap ? x->cap : 64;
    while (cap < need)
        cap *= 2;
    struct lz_ext *p = lz_alloc((size_t)cap * sizeof(*p));
    if (!p)
        return -ENOMEM;
    if (x->n)
        memcpy(p, x->v, (size_t)x->n * sizeof(*p));
    if (x->mem)
        munmap(x->mem, (size_t)x->memcap * sizeof(*p));
    x->v = x->mem = p;
    x->cap = x->memcap = cap;
    return 0;
}

/* Index of the first extent that ends after `a`. */
static long lz_first_after(const struct lz_vec *x, unsigned long a)
{
    long lo = 0, hi = x->n;
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        if (x->v[mid].addr + x->v[mid].len <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Remove [s, e) from the extents; what was removed is appended to `out` if given. */
static int lz_cut(struct lz_vec *x, unsigned long s, unsigned long e, struct lz_vec *out)
{
    long i = lz_first_after(x, s), j = i;
    struct lz_ext left = { 0, 0, 0 }, right = { 0, 0, 0 };
    int hasl = 0, hasr = 0;
    while (j < x->n && x->v[j].addr < e) {
        struct lz_ext c = x->v[j];
        unsigned long cs = c.addr > s ? c.addr : s;
        unsigned long ce = c.addr + c.len < e ? c.addr + c.len : e;
        if (c.addr < s) {
            left = (struct lz_ext){ c.addr, s - c.addr, c.off };
            hasl = 1;
        }
        if (c.addr + c.len > e) {
            right = (struct lz_ext){ e, c.addr + c.len - e, c.off + (e - c.addr) };
            hasr = 1;
        }
        if (out) {
            if (lz_reserve(out, out->n + 1))
                return -ENOMEM;
            out->v[out->n++] = (struct lz_ext){ cs, ce - cs, c.off + (cs - c.addr) };
        }
        j++;
    }
    long keep = hasl + hasr;
    if (j == i)
        return 0;
    if (i == 0 && keep == 0) {  /* whole extents off the front (the background push): O(1) */
        x->v += j;
        x->n -= j;
        x->cap -= j;
        return 0;
    }
    if (lz_reserve(x, x->n - (j - i) + keep))
        return -ENOMEM;
    if (i + keep != j)
        memmove(&x->v[i + keep], &x->v[j], (size_t)(x->n - j) * sizeof(struct lz_ext));
    x->n += keep - (j - i);
    if (hasl)
        x->v[i++] = left;
    if (hasr)
        x->v[i] = right;
    return 0;
}

static int lz_insert(struct lz_vec *x, struct lz_ext e)
{
    if (lz_reserve(x, x->n + 1))
        return -ENOMEM;
    long i = lz_first_after(x, e.addr);
    memmove(&x->v[i + 1], &x->v[i], (size_t)(x->n - i) * sizeof(e));
    x->v[i] = e;
    x->n++;
    return 0;
}

static int lz_send(int sock, char tag, int fd)
{
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec io = { &tag, 1 };
    struct msghdr m;
    memset(&m, 0, sizeof(m));
    memset(cbuf, 0, sizeof(cbuf));
    m.msg_iov = &io;
    m.msg_iovlen = 1;
    if (fd >= 0) {
        m.msg_control = cbuf;
        m.msg_controllen = sizeof(cbuf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(fd));
    }
    while (sendmsg(sock, &m, MSG_NOSIGNAL) < 0)
        if (errno != EINTR)
            return -errno;
    return 0;
}

/* The guard, forked from the handler: keeps every fd it has from the fork (the
 * uffds: so that none is closed while a process still waits on it; the pidfds of
 * lz_kill) and what it is sent later, until the handler says 'D' (done: exit) or
 * ends without saying it (SIGKILL every process, wait until gone, exit). */
static void lz_guard(int sock)
{
    syscall(SYS_setsid);
    syscall(SYS_prctl, 15 /* PR_SET_NAME */, "pyckpt-guard", 0, 0, 0);
    if (lz_pages_fd >= 0)
        close(lz_pages_fd);
    if (lz_status_fd >= 0)
        close(lz_status_fd);
    for (;;) {
        char tag = 0, cbuf[CMSG_SPACE(sizeof(int))];
        struct iovec io = { &tag, 1 };
        struct msghdr m;
        memset(&m, 0, sizeof(m));
        m.msg_iov = &io;
        m.msg_iovlen = 1;
        m.msg_control = cbuf;
        m.msg_controllen = sizeof(cbuf);
        ssize_t r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        int fd = -1;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            memcpy(&fd, CMSG_DATA(c), sizeof(fd));
        if (tag == 'D')
            syscall(SYS_exit_group, 0);
        if (tag == 'P' && fd >= 0 && lz_nkill < LZ_MAX_PIDS)
            lz_kill[lz_nkill++] = fd;
    }
    lz_kill_all(lz_kill, lz_nkill);
    char msg[300];  /* (not said if the handler said why) */
    snprintf(msg, sizeof(msg), "page handler %ld of process %d ended before every page was in "
             "(killed?): the processes it served were killed", lz_handler_pid, lz_main_pid);
    lz_say('E', msg);
    syscall(SYS_exit_group, 1);
}

/* Start guard `k` (at first, or in place of one that ended: reaped here).  It
 * is forked: it holds every uffd and pidfd the handler holds the moment it
 * exists.  0, or -errno (then there is none in slot k: lz_socks[k] is -1). */
static int lz_new_guard(int k)
{
    if (lz_socks[k] >= 0)
        close(lz_socks[k]);
    lz_socks[k] = -1;
    if (lz_guard_pids[k] > 0) {
        int st;  /* its socket closed: it is exiting */
        while (waitpid((pid_t)lz_guard_pids[k], &st, __WALL) < 0 && errno == EINTR)
            ;
    }
    lz_guard_pids[k] = -1;
    lz_guard_try = lz_ms();
    lz_guard_gen[k]++;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    long g = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (g == 0) {
        close(sv[0]);
        for (int j = 0; j < LZ_GUARDS; j++)  /* the handler's end of the others' sockets: */
            if (lz_socks[j] >= 0)            /* held here, they would not see it end */
                close(lz_socks[j]);
        lz_guard(sv[1]);
    }
    int e = errno;
    close(sv[1]);
    if (g < 0) {
        close(sv[0]);
        return -e;
    }
    lz_socks[k] = sv[0];
    lz_guard_pids[k] = g;
    return 0;
}

/* Hand `fd` (tag 'U': a uffd, 'P': a pidfd, kept open here) to each guard; to a
 * new one in place of one gone (which has it from the fork). */
static void lz_give(char tag, int fd)
{
    if (tag == 'P' && lz_nkill < LZ_MAX_PIDS)
        lz_kill[lz_nkill++] = fd;
    for (int k = 0; k < LZ_GUARDS; k++) {
        int r = lz_socks[k] >= 0 ? lz_send(lz_socks[k], tag, fd) : -EPIPE;
        if (r == -EPIPE || r == -ECONNRESET)
            lz_new_guard(k);  /* none: every page is pushed (lz_handler) */
        else if (r < 0)  /* the guard lives on: it would not hold fd */
            lz_die("cannot reach a guard", -r);
    }
}

/* A guard ended (its socket polled readable or hung up: it never writes)? Then
 * start a new one at once. */
static void lz_watch_guards(void)
{
    for (int k = 0; k < LZ_GUARDS; k++) {
        struct pollfd p = { lz_socks[k], POLLIN, 0 };
        if (lz_socks[k] >= 0 && poll(&p, 1, 0) > 0)
            lz_new_guard(k);
    }
}

static int lz_is_seen(int pid)
{
    for (long i = 0; i < lz_nseen; i++)
        if (lz_seen[i] == pid)
            return 1;
    return 0;
}

/* Children of process `pid` not seen before, now seen: with `send`, a pidfd of
 * each to the guard, the first's in *pidfd_out; the first is returned (0: none). */
static int lz_new_children(int pid, int *pidfd_out, int send)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    int dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return 0;
    int first = 0;
    for (;;) {
        long n = syscall(SYS_getdents64, dir, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (long off = 0; off < n;) {
            unsigned short reclen = *(unsigned short *)(buf + off + 16);
            const char *name = buf + off + 19;
            off += reclen;
            if (name[0] < '0' || name[0] > '9')
                continue;
            char cpath[96], list[4096];
            snprintf(cpath, sizeof(cpath), "/proc/%d/task/%s/children", pid, name);
            int cf = open(cpath, O_RDONLY | O_CLOEXEC);
            if (cf < 0)
                continue;
            ssize_t got = read(cf, list, sizeof(list) - 1);
            close(cf);
            if (got <= 0)
                continue;
            list[got] = 0;
            for (char *p = list; *p;) {
                while (*p == ' ' || *p == '\n')
                    p++;
                if (!*p)
                    break;
                int child = 0;
                while (*p >= '0' && *p <= '9')
                    child = child * 10 + (*p++ - '0');
                if (child <= 0 || lz_is_seen(child) || lz_nseen >= LZ_MAX_PIDS)
                    continue;
                lz_seen[lz_nseen++] = child;
                if (!send)
                    continue;
                int pfd = (int)syscall(SYS_pidfd_open, child, 0);
                if (pfd < 0)
                    continue;
                lz_give('P', pfd);  /* held open here: in lz_kill */
                if (!first) {
                    first = child;
                    *pidfd_out = pfd;
                }
            }
        }
    }
    close(dir);
    return first;
}

static void lz_gone(struct lz_uf *u)
{
    u->gone = 1;
    u->ext.n = 0;
    close(u->fd);
    u->pidfd = -1;  /* not closed: in lz_kill */
}

/* Copy every page still to come in [s, e) into u's process.  0, or -EAGAIN (an
 * event is pending: read it first), -ESRCH (its memory is gone); dies on others. */
static long lz_fill(struct lz_uf *u, unsigned long s, unsigned long e)
{
    unsigned long limit = ~0UL;  /* halved when a copy spans two VMAs (ENOENT) */
    while (s < e) {
        long i = lz_first_after(&u->ext, s);
        if (i >= u->ext.n || u->ext.v[i].addr >= e)
            return 0;
        struct lz_ext c = u->ext.v[i];
        unsigned long cs = c.addr > s ? c.addr : s;
        unsigned long ce = c.addr + c.len < e ? c.addr + c.len : e;
        if (ce - cs > limit)
            ce = cs + limit;
        lz_verify(c.off + (cs - c.addr), ce - cs);  /* never a byte that fails its checksum */
        struct uffdio_copy cp;
        memset(&cp, 0, sizeof(cp));
        cp.dst = cs;
        cp.src = (unsigned long)(lz_map + c.off + (cs - c.addr));
        cp.len = ce - cs;
        int r = ioctl(u->fd, UFFDIO_COPY, &cp);
        int err = r < 0 ? errno : 0;
        unsigned long done = r == 0 ? ce - cs : (cp.copy > 0 ? (unsigned long)cp.copy : 0);
        if (err == EEXIST || (err == EAGAIN && cp.copy == -EEXIST)) {
            err = EEXIST;
            done += LZ_PAGE;  /* that page is there already (never from the image twice) */
        }
        if (done && lz_cut(&u->ext, cs, cs + done, NULL))
            lz_die("out of memory", ENOMEM);
        if (err == 0 || err == EEXIST || (err == EAGAIN && done))
            s = cs + done;
        else if (err == ENOENT && !done && ce - cs > LZ_PAGE)
            limit = ((ce - cs) / 2 + LZ_PAGE - 1) & ~(LZ_PAGE - 1);  /* the VMA was split */
        else if (err == EAGAIN || err == ESRCH)
            return -err;
        else  /* (EFAULT: pages.img could not be read, cut shorter) */
            lz_die_as(err == EFAULT ? 'I' : 'E', "UFFDIO_COPY from pages.img failed", err);
    }
    return 0;
}

static void lz_wake(struct lz_uf *u, unsigned long a)
{
    struct uffdio_range rg = { a, LZ_PAGE };
    ioctl(u->fd, UFFDIO_WAKE, &rg);
}

/* Answer a fault: the image's pages around it (the faulting one first), or a zero
 * page where the image has none.  0, or -EAGAIN: try again once events are read. */
static long lz_fault(long ui, unsigned long a, unsigned long window)
{
    struct lz_uf *u = &lz_ufs[ui];
    a &= ~(LZ_PAGE - 1);
    long i = lz_first_after(&u->ext, a);
    long r;
    if (i < u->ext.n && u->ext.v[i].addr <= a) {
        unsigned long ws = a & ~(window - 1);
        r = lz_fill(u, a, ws + window);
        if (r == 0)
            r = lz_fill(u, ws, a);
    } else {
        struct uffdio_zeropage z;
        memset(&z, 0, sizeof(z));
        z.range.start = a;
        z.range.len = LZ_PAGE;
        r = ioctl(u->fd, UFFDIO_ZEROPAGE, &z) < 0 ? -errno : 0;
        if (r == -EEXIST || r == -ENOENT)
            r = 0;  /* there already, or no longer registered: the kernel decides */
    }
    if (r == -EAGAIN)
        return r;
    if (r == -ESRCH) {
        lz_gone(u);
        return 0;
    }
    if (r < 0)
        lz_die("UFFDIO_ZEROPAGE failed", -r);
    lz_wake(u, a);
    return 0;
}

static void lz_defer(long ui, unsigned long a)
{
    if (lz_ndeferred >= 4096)
        lz_die("too many faults waiting", EAGAIN);
    lz_deferred[lz_ndeferred++] = (struct lz_fault){ (int)ui, a };
}

static void lz_event(long ui, const struct uffd_msg *m, unsigned long window)
{
    struct lz_uf *u = &lz_ufs[ui];
    switch (m->event) {
    case UFFD_EVENT_PAGEFAULT:
        if (lz_fault(ui, m->arg.pagefault.address, window) == -EAGAIN)
            lz_defer(ui, m->arg.pagefault.address);
        break;
    case UFFD_EVENT_REMOVE:  /* MADV_DONTNEED/REMOVE: zero from now on */
    case UFFD_EVENT_UNMAP:   /* gone */
        if (lz_cut(&u->ext, m->arg.remove.start, m->arg.remove.end, NULL))
            lz_die("out of memory", ENOMEM);
        break;
    case UFFD_EVENT_REMAP: {  /* moved: what was to come at `from` comes at `to` */
        struct lz_vec moved = { NULL, 0, 0, NULL, 0 };
        unsigned long from = m->arg.remap.from, to = m->arg.remap.to, len = m->arg.remap.len;
        if (lz_cut(&u->ext, from, from + len, &moved) || lz_cut(&u->ext, to, to + len, NULL))
            lz_die("out of memory", ENOMEM);
        for (long k = 0; k < moved.n; k++) {
            struct lz_ext e = moved.v[k];
            e.addr = e.addr - from + to;
            if (lz_insert(&u->ext, e))
                lz_die("out of memory", ENOMEM);
        }
        if (moved.mem)
            munmap(moved.mem, (size_t)moved.memcap * sizeof(struct lz_ext));
        break;
    }
    case UFFD_EVENT_FORK: {  /* the child's missing pages are the parent's */
        int fd = (int)m->arg.fork.ufd;
        if (lz_nuf >= LZ_MAX_UF)
            lz_die("too many processes forked while lazy", EMFILE);
        struct lz_uf *c = &lz_ufs[lz_nuf];
        memset(c, 0, sizeof(*c));
        c->fd = fd;
        c->pidfd = -1;
        if (lz_reserve(&c->ext, u->ext.n))
            lz_die("out of memory", ENOMEM);
        memcpy(c->ext.v, u->ext.v, (size_t)u->ext.n * sizeof(struct lz_ext));
        c->ext.n = u->ext.n;
        lz_nuf++;
        lz_give('U', fd);
        /* The fork goes on once its event is read: its child shows up among the
         * parent's children within moments (else looked for again, see lz_handler). */
        c->ppid = u->pid;
        if (u->pid > 0) {
            struct timespec t0, t;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            for (;;) {
                int pfd = -1;
                int child = lz_new_children(u->pid, &pfd, 1);
                if (child) {
                    c->pid = child;
                    c->pidfd = pfd;
                    c->ppid = 0;
                    break;
                }
                clock_gettime(CLOCK_MONOTONIC, &t);
                if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > 200000000L)
                    break;
                lz_watch_guards();
                sched_yield();
            }
        }
        break;
    }
    default:
        break;
    }
}

static void lz_handler(int uffd, int pidfd, int pid, const unsigned long *runs, long nruns,
                       int prefetch, unsigned long window, unsigned long chunk)
{
    lz_ufs = lz_alloc(LZ_MAX_UF * sizeof(struct lz_uf));
    lz_seen = lz_alloc(LZ_MAX_PIDS * sizeof(int));
    lz_deferred = lz_alloc(4096 * sizeof(struct lz_fault));
    static struct pollfd pfds[2 * LZ_MAX_UF + LZ_GUARDS + 1];
    static long owner[2 * LZ_MAX_UF + LZ_GUARDS + 1];
    if (!lz_ufs || !lz_seen || !lz_deferred)
        lz_die("out of memory", ENOMEM);
    struct lz_uf *u = &lz_ufs[0];
    u->fd = uffd;
    u->pidfd = pidfd;
    u->pid = pid;
    lz_nuf = 1;
    if (lz_reserve(&u->ext, nruns))
        lz_die("out of memory", ENOMEM);
    for (long i = 0; i < nruns; i++)
        u->ext.v[i] = (struct lz_ext){ runs[3 * i], runs[3 * i + 1], runs[3 * i + 2] };
    u->ext.n = nruns;
    lz_seen[lz_nseen++] = pid;
    int ignored = -1;
    lz_new_children(pid, &ignored, 0);  /* its children made by the restore: not forks */
    lz_prefetch = prefetch;
    long rr = 0;  /* round robin of the background push */
    for (;;) {
        long live = 0, np = 0;
        for (long i = 0; i < lz_nuf; i++) {
            struct lz_uf *x = &lz_ufs[i];
            if (x->gone)
                continue;
            live += x->ext.n > 0;
            pfds[np] = (struct pollfd){ x->fd, POLLIN, 0 };
            owner[np++] = i;
            if (x->pidfd >= 0) {
                pfds[np] = (struct pollfd){ x->pidfd, POLLIN, 0 };
                owner[np++] = -1 - i;
            }
        }
        if (!live)
            break;
        long gen[LZ_GUARDS];  /* the guards polled (another may start before their events are read) */
        int pushing = prefetch;
        for (int k = 0; k < LZ_GUARDS; k++) {
            if (lz_socks[k] < 0 && lz_ms() - lz_guard_try >= 10)
                lz_new_guard(k);  /* one could not be started: try again meanwhile */
            gen[k] = lz_guard_gen[k];
            if (lz_socks[k] >= 0) {  /* a guard never writes: anything is its end */
                pfds[np] = (struct pollfd){ lz_socks[k], POLLIN, 0 };
                owner[np++] = LONG_MIN + k;
            } else {
                pushing = 1;  /* a guard missing: every page, at once */
            }
        }
        if (lz_report_fd >= 0 && !lz_report_quiet) {  /* pyckpt: 'R' (they run), or gone */
            pfds[np] = (struct pollfd){ lz_report_fd, POLLIN, 0 };
            owner[np++] = LONG_MIN + LZ_GUARDS;
        }
        int unknown = 0;  /* a forked child not found yet: look again every 10 ms */
        for (long i = 0; i < lz_nuf; i++) {
            struct lz_uf *x = &lz_ufs[i];
            if (x->gone || !x->ppid)
                continue;
            unknown = 1;
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long ms = now.tv_sec * 1000L + now.tv_nsec / 1000000L;
            if (ms - lz_last_look < 10)
                continue;
            lz_last_look = ms;
            int pfd = -1;
            int child = lz_new_children(x->ppid, &pfd, 1);
            if (child) {
                x->pid = child;
                x->pidfd = pfd;
                x->ppid = 0;
            }
        }
        int busy = pushing || lz_ndeferred;
        if (unknown && !busy)
            busy = -1;
        int ready = poll(pfds, (nfds_t)np, busy > 0 ? 0 : busy < 0 ? 10 : 1000);
        if (ready < 0 && errno != EINTR)
            lz_die("poll failed", errno);
        if (ready == 0 && !busy) {
            /* a second without a fault (lazy="touch"): push one page to each process, which
             * also tells one whose memory is gone (exec: its pidfd says nothing) */
            for (long i = 0; i < lz_nuf; i++) {
                struct lz_uf *x = &lz_ufs[i];
                if (!x->gone && x->ext.n && lz_fill(x, x->ext.v[0].addr, x->ext.v[0].addr + LZ_PAGE) == -ESRCH)
                    lz_gone(x);
            }
        }
        for (long k = 0; k < np; k++) {
            if (!pfds[k].revents)
                continue;
            long i = owner[k];
            if (i == LONG_MIN + LZ_GUARDS) {
                char b = 0;
                ssize_t n = recv(lz_report_fd, &b, 1, MSG_DONTWAIT);
                if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR)))
                    lz_report_quiet = 1;  /* pyckpt is gone (what is said later is lost to it) */
                if (lz_report_quiet || b == 'R')
                    lz_start_ahead();
                continue;
            }
            if (i < LONG_MIN + LZ_GUARDS) {  /* a guard ended: another, at once (unless done) */
                if (gen[i - LONG_MIN] == lz_guard_gen[i - LONG_MIN])
                    lz_new_guard((int)(i - LONG_MIN));
                continue;
            }
            if (i < 0) {  /* its process ended */
                if (!lz_ufs[-1 - i].gone)
                    lz_gone(&lz_ufs[-1 - i]);
                continue;
            }
            for (int round = 0; round < 16 && !lz_ufs[i].gone; round++) {
                struct uffd_msg msgs[16];
                ssize_t got = read(lz_ufs[i].fd, msgs, sizeof(msgs));
                if (got < 0) {
                    if (errno == EAGAIN || errno == EINTR)
                        break;
                    lz_die("reading the userfaultfd failed", errno);
                }
                if (got == 0)
                    break;
                for (long j = 0; j < got / (ssize_t)sizeof(struct uffd_msg); j++)
                    lz_event(i, &msgs[j], window);
            }
        }
        /* faults that met a pending event, again now that events are read */
        long nd = lz_ndeferred;
        lz_ndeferred = 0;
        for (long d = 0; d < nd; d++) {
            struct lz_fault f = lz_deferred[d];
            if (!lz_ufs[f.uf].gone && lz_fault(f.uf, f.addr, window) == -EAGAIN)
                lz_defer(f.uf, f.addr);
        }
        if (pushing) {
            for (long tries = 0; tries < lz_nuf; tries++) {
                struct lz_uf *x = &lz_ufs[rr++ % lz_nuf];
                if (x->gone || !x->ext.n)
                    continue;
                unsigned long s = x->ext.v[0].addr;
                long r = lz_fill(x, s, s + chunk);
                if (r == -ESRCH)
                    lz_gone(x);
                break;  /* -EAGAIN: an event first */
            }
        }
    }
    for (int k = 0; k < LZ_GUARDS; k++)
        if (lz_socks[k] >= 0)
            lz_send(lz_socks[k], 'D', -1);
    /* gone only once the guards are: then no copy of any uffd is left (smaps loses "um") */
    for (int k = 0; k < LZ_GUARDS; k++) {
        int gst;
        while (lz_guard_pids[k] > 0 && waitpid((pid_t)lz_guard_pids[k], &gst, __WALL) < 0 && errno == EINTR)
            ;
    }
    syscall(SYS_exit_group, 0);
}

/* The address of python-xxhash's XXH3 64-bit function in the copy of `path` this
 * process has loaded already (the one that computed the image's checksums; the
 * runtime-dispatched one, AVX2 where there is, else the plain one), or 0. */
unsigned long ck_lazy_hash_fn(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (!h)
        return 0;
    void *f = dlsym(h, "XXH3_64bits_dispatch");
    if (!f)
        f = dlsym(h, "XXH3_64bits");
    dlclose(h);  /* (still loaded: Python holds it) */
    return (unsigned long)f;
}

/* `fn` (from ck_lazy_hash_fn) over `len` bytes at `buf`: to compare with xxhash's. */
unsigned long long ck_lazy_hash(unsigned long fn, const void *buf, size_t len)
{
    return ((lz_hash_fn)fn)(buf, len);
}

/* Start the handler of `uffd` (registered by ck_lazy_register): `runs` holds
 * `nruns` (address, length, offset in pages.img) triples sorted by address,
 * `pages_fd` is pages.img (of `pages_size` bytes, else -ESTALE), `pidfd` the
 * process's.  `stored`: `nstored` (offset, length, address, digests, index of the
 * first in `digests`) of the stored runs that make up `runs`, sorted by offset;
 * each piece (the run, or with more than one digest its pieces on the `piece`
 * grid of addresses) is checked with `hash_fn` when first served (hash_fn 0:
 * every page was checked before, none is).  `report_fd`:
 * the handler's end of the report socket (or -1).  `prefetch`: push every page in
 * the background (else only on touch).  Returns the handler's PID once it runs, or
 * -errno; pyckpt's copies of the fds may then be closed.  Its first guard is forked
 * meanwhile (on the other CPU, while the restore goes on): ck_lazy_guard(*status)
 * says its PID, to be read before the process is released. */
long ck_lazy_start(int uffd, int pages_fd, int pidfd, int pid, const unsigned long *runs, long nruns,
                   const unsigned long *stored, long nstored, const unsigned long *digests, long ndigests,
                   unsigned long piece, unsigned long hash_fn, long pages_size, int report_fd,
                   int prefetch, unsigned long window, unsigned long chunk, int *status)
{
    int st[2];
    struct stat sb;
    if (fstat(pages_fd, &sb) < 0)
        return -errno;
    if (sb.st_size != pages_size)
        return -ESTALE;  /* cut or grown since the image was opened */
    if (pipe2(st, O_CLOEXEC) < 0)
        return -errno;
    long mid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);  /* fork, without libc's atfork handlers */
    if (mid < 0) {
        int e = errno;
        close(st[0]);
        close(st[1]);
        return -e;
    }
    if (mid == 0) {
        long h = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
        if (h != 0) {
            if (h < 0) {
                long res = -errno;
                if (write(st[1], &res, sizeof(res)) < 0) { /* the caller sees EOF */ }
            }
            syscall(SYS_exit_group, 0);  /* the handler is reparented: not pyckpt's child */
        }
        /* the handler: hold nothing of pyckpt's but what it needs, at fixed numbers */
        long res = 0;
        int nkeep = report_fd >= 0 ? 5 : 4;
        int keep[5] = { uffd, pages_fd, pidfd, st[1], report_fd };
        for (int k = 0; k < nkeep; k++) {
            int fd = (int)syscall(SYS_fcntl, keep[k], F_DUPFD_CLOEXEC, 100 + k);
            if (fd < 0)
                syscall(SYS_exit_group, 4);
            keep[k] = fd;
        }
        for (int k = 0; k < nkeep; k++)
            if (dup3(keep[k], 3 + k, O_CLOEXEC) < 0)
                syscall(SYS_exit_group, 4);
        struct stat es;  /* stderr kept where a line stays without holding a reader up */
        lz_stderr = isatty(2) || (fstat(2, &es) == 0 && S_ISREG(es.st_mode));
        syscall(SYS_close_range, 3 + nkeep, ~0U, 0);
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        for (int k = 0; k < 3; k++)
            if (null >= 0 && !(k == 2 && lz_stderr))
                dup2(null, k);
        if (null > 2)
            close(null);
        uffd = 3, pages_fd = 4, pidfd = 5;
        int status_fd = 6;
        lz_report_fd = report_fd >= 0 ? 7 : -1;
        unsigned long act[4] = { 0, 0, 0, 0 };
        for (int sig = 1; sig <= 64; sig++)
            if (sig != SIGKILL && sig != SIGSTOP)
                syscall(SYS_rt_sigaction, sig, act, NULL, 8);
        act[0] = (unsigned long)SIG_IGN;  /* a write to pyckpt gone (its status pipe): EPIPE */
        syscall(SYS_rt_sigaction, SIGPIPE, act, NULL, 8);
        struct sigaction bus;
        memset(&bus, 0, sizeof(bus));
        bus.sa_handler = lz_sigbus;
        sigaction(SIGBUS, &bus, NULL);
        unsigned long none = 0;
        syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8);
        cpu_set_t all;
        memset(&all, 0xff, sizeof(all));
        sched_setaffinity(0, sizeof(all), &all);  /* pyckpt pinned itself while restoring */
        syscall(SYS_setsid);
        syscall(SYS_prctl, 15 /* PR_SET_NAME */, "pyckpt-lazy", 0, 0, 0);
        if (chdir("/") < 0) { /* nothing held either way */ }
        lz_handler_pid = syscall(SYS_getpid);
        lz_main_pid = pid;
        lz_hash = (lz_hash_fn)hash_fn;
        lz_runs = stored;  /* (in this copy of pyckpt's memory) */
        lz_nruns = nstored;
        lz_digests = digests;
        lz_ndigests = ndigests;
        lz_piece = piece;
        lz_ok = lz_alloc((size_t)(ndigests > 0 ? ndigests : 1));
        void *shared = mmap(NULL, LZ_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        lz_reported = shared == MAP_FAILED ? NULL : shared;
        lz_map = mmap(NULL, sb.st_size ? (size_t)sb.st_size : LZ_PAGE, PROT_READ, MAP_SHARED, pages_fd, 0);
        lz_pages_fd = pages_fd;
        lz_status_fd = status_fd;
        lz_kill[0] = pidfd;  /* the guard has it, and the uffd, from its fork */
        lz_nkill = 1;
        if (lz_map == MAP_FAILED)
            res = -errno;
        else if (!lz_ok || !lz_reported)
            res = -ENOMEM;
        else
            res = syscall(SYS_getpid);
        if (write(status_fd, &res, sizeof(res)) != sizeof(res) || res < 0)
            syscall(SYS_exit_group, 5);  /* no guard yet; pyckpt fails the restore */
        /* the first guard, while pyckpt goes on; it must exist before the process runs:
         * pyckpt reads its PID (or why it failed) before the release, and fails the
         * restore without it (then this handler exits: the process is gone) */
        res = lz_new_guard(0);
        if (res == 0)
            res = lz_guard_pids[0];
        if (write(status_fd, &res, sizeof(res)) != sizeof(res) && res > 0) {
            /* pyckpt failed meanwhile (its end closed): it kills the process, which
             * the handler sees gone; until then it serves as usual */
        }
        if (res < 0)
            syscall(SYS_exit_group, 5);  /* no guard: pyckpt fails the restore */
        madvise(lz_map, (size_t)sb.st_size, MADV_SEQUENTIAL);
        close(status_fd);
        lz_status_fd = -1;
        lz_new_guard(1);  /* the second (failed: tried again while every page is pushed) */
        lz_handler(uffd, pidfd, pid, runs, nruns, prefetch, window, chunk);
    }
    close(st[1]);
    long res = -EIO;
    ssize_t got;
    while ((got = read(st[0], &res, sizeof(res))) < 0 && errno == EINTR)
        ;
    int wst;
    while (waitpid((pid_t)mid, &wst, __WALL) < 0 && errno == EINTR)
        ;
    if (got != sizeof(res) || res < 0) {
        close(st[0]);
        return got != sizeof(res) ? -ECHILD : res;
    }
    *status = st[0];
    return res;
}

/* The PID of the first guard of the handler whose status pipe is `status_fd` (from
 * ck_lazy_start; closed here), once it runs, or -errno. */
long ck_lazy_guard(int status_fd)
{
    long res = -EIO;
    ssize_t got;
    while ((got = read(status_fd, &res, sizeof(res))) < 0 && errno == EINTR)
        ;
    close(status_fd);
    return got == sizeof(res) ? res : -ECHILD;
}

/* A read-only shared mapping of `len` bytes of `fd`, populated (MAP_POPULATE), made
 * without Python's lock held (Python's mmap holds it through the populate); returns
 * its address or -errno.  ck_unmap undoes it. */
long ck_map_populated(int fd, size_t len)
{
    void *p = mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    return p == MAP_FAILED ? -errno : (long)p;
}

int ck_unmap(unsigned long addr, size_t len)
{
    return munmap((void *)addr, len) < 0 ? -errno : 0;
}
