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

/* Which pieces of buf (the memory at [addr, addr+len)) hold only zero bytes: the
 * pieces are cut on a grid of `piece` bytes (a power of two) in addresses, so a
 * run that does not start on the grid has a short first piece.  flags[i] = 1 for
 * an all-zero piece, else 0.  Returns the number of pieces. */
long ck_zero_pieces(const void *buf, unsigned long addr, size_t len, size_t piece, unsigned char *flags)
{
    const unsigned char *p = buf;
    long n = 0;
    size_t done = 0;
    while (done < len) {
        size_t stop = ((addr + done) & ~(piece - 1)) + piece - addr;
        if (stop > len)
            stop = len;
        const uint64_t *w = (const uint64_t *)(p + done), *end = (const uint64_t *)(p + stop);
        int zero = 1;
        /* memory is page-aligned here: whole 64-byte blocks, stop at the first non-zero one */
        for (; w + 8 <= end; w += 8)
            if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) {
                zero = 0;
                break;
            }
        for (; zero && w < end; w++)
            if (*w)
                zero = 0;
        flags[n++] = (unsigned char)zero;
        done = stop;
    }
    return n;
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
int ck_tramp_call(int pid, const void *tmpl, unsigned long gadget, unsigned long sp, long nr,
                  const long *args, long *result, int *status)
{
    struct user_regs_struct regs;
    struct iovec iov = { &regs, sizeof(regs) };

    for (int stop = 0; stop < 2; stop++) {  /* the gadget's syscall-entry, then the call's exit */
        if (stop == 1) {
            memcpy(&regs, tmpl, sizeof(regs));
            regs.rip = gadget;
            regs.rsp = sp;
            regs.orig_rax = nr;
            regs.rax = (unsigned long)-ENOSYS;
            put_args(&regs, args);
            iov.iov_len = sizeof(regs);
            if (syscall(SYS_ptrace, PTRACE_SETREGSET, pid, (unsigned long)NT_PRSTATUS, &iov) < 0)
                return -errno;
        }
        int r = resume_to_trap(pid, PTRACE_SYSCALL, status);
        if (r)
            return r;
        iov.iov_len = sizeof(regs);
        if (syscall(SYS_ptrace, PTRACE_GETREGSET, pid, (unsigned long)NT_PRSTATUS, &iov) < 0)
            return -errno;
        if (stop == 0 && regs.orig_rax != 15)
            return 1;  /* not the gadget's rt_sigreturn */
    }
    if (regs.rip != gadget)
        return 1;
    *result = (long)regs.rax;
    return 0;
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
