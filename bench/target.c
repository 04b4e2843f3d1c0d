/* Benchmark target for bench/bench.py.
 *
 *   target MIB [NFORK]
 *
 * Maps MIB MiB of private anonymous memory, writes non-zero pseudo-random
 * data to every byte, prints
 *     READY pid=P addr=0xA len=L sum=S
 * and sleeps in a loop (nanosleep, 50 ms).  Single-threaded, no libc stdio
 * buffering (everything goes out on fd 1 with dprintf, or one write() per
 * line).
 *
 *   SIGUSR1: recompute the checksum of the memory and print
 *                SUM S getpid=G nspid=O[,...,I]
 *            G is getpid() (inside a restored copy in its own PID namespace:
 *            the image's PID); nspid is the NSpid line of /proc/self/status,
 *            comma-separated, outermost first (the PID as the caller sees it
 *            first).  Every copy of a restored image appends to the same
 *            log, so bench.py tells copies apart by these.
 *   SIGUSR2 sent with kill(): time NFORK (default 5) fork() calls, each
 *            child _exit(0)s at once; per fork print
 *                FORK fork_us=F total_us=T
 *            F: fork() call to the parent's return from it (page tables
 *               copied, pages write-protected: the freeze a CoW snapshot needs)
 *            T: fork() call to waitpid() returning (child exit and its mm
 *               torn down too).
 *   SIGUSR2 sent with sigqueue() and a value N > 0: fork N children that
 *            stay alive at once (each writes one byte to a pipe, then
 *            pauses), then SIGKILL and reap them all, and print
 *                FORKN n=N forks_us=F running_us=R max_fork_us=M reaped_us=K
 *            F: first fork() call to the return of the last one in the parent
 *            R: first fork() call until every child has run (its byte read)
 *            M: the slowest single fork() call
 *            K: first fork() call until all N are killed and reaped.
 *            The children die with the target (PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_FORKN 256

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static volatile sig_atomic_t want_fork, want_forkn, want_sum;

static void on_usr1(int s) { (void)s; want_sum = 1; }
static void on_usr2(int s, siginfo_t *si, void *uc)
{
    (void)s;
    (void)uc;
    if (si->si_code == SI_QUEUE && si->si_value.sival_int > 0)
        want_forkn = si->si_value.sival_int;
    else
        want_fork = 1;
}

/* One write() per line: every copy of a restored image appends to the same
 * O_APPEND log, so lines from different copies never interleave. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(buf))
        n = sizeof(buf) - 1;
    while (write(1, buf, n) < 0 && errno == EINTR)
        ;
}

/* The NSpid line of /proc/self/status as "outer,...,inner" ("?" if unreadable).
 * /proc is the caller's mount, so the first PID is the one the caller sees. */
static void read_nspid(char *out, size_t outlen)
{
    char buf[4096];
    snprintf(out, outlen, "?");
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n, got = 0;
    while (got < (ssize_t)sizeof(buf) - 1 && (n = read(fd, buf + got, sizeof(buf) - 1 - got)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        got += n;
    }
    close(fd);
    buf[got] = 0;
    char *p = strstr(buf, "\nNSpid:");
    if (!p)
        return;
    p += 7;
    size_t o = 0;
    int sep = 0;
    for (; *p && *p != '\n' && o + 2 < outlen; p++) {
        if (*p == ' ' || *p == '\t') {
            sep = o > 0;
            continue;
        }
        if (sep)
            out[o++] = ',';
        sep = 0;
        out[o++] = *p;
    }
    out[o] = 0;
}

/* N children alive at once, then killed and reaped (see the top comment). */
static void fork_n(int n)
{
    static pid_t kids[MAX_FORKN];
    int p[2];
    if (n > MAX_FORKN)
        n = MAX_FORKN;
    if (pipe2(p, O_CLOEXEC) < 0) {
        say("FORKN error pipe\n");
        return;
    }
    pid_t parent = getpid();
    double max_fork = 0, t0 = now_us();
    int made = 0;
    for (; made < n; made++) {
        double f0 = now_us();
        pid_t c = fork();
        if (c == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(0);
            while (write(p[1], "x", 1) < 0 && errno == EINTR)
                ;
            for (;;)
                pause();
        }
        if (c < 0)
            break;
        double f = now_us() - f0;
        if (f > max_fork)
            max_fork = f;
        kids[made] = c;
    }
    double t1 = now_us();
    int ran = 0;
    char b[64];
    while (ran < made) {
        ssize_t r = read(p[0], b, (size_t)(made - ran) < sizeof(b) ? (size_t)(made - ran) : sizeof(b));
        if (r > 0)
            ran += r;
        else if (r < 0 && errno == EINTR)
            continue;
        else
            break;
    }
    double t2 = now_us();
    for (int i = 0; i < made; i++)
        kill(kids[i], SIGKILL);
    for (int i = 0; i < made; i++)
        while (waitpid(kids[i], NULL, 0) < 0 && errno == EINTR)
            ;
    double t3 = now_us();
    close(p[0]);
    close(p[1]);
    if (made < n || ran < made)
        say("FORKN error n=%d made=%d ran=%d\n", n, made, ran);
    else
        say("FORKN n=%d forks_us=%.1f running_us=%.1f max_fork_us=%.1f reaped_us=%.1f\n", n, t1 - t0,
            t2 - t0, max_fork, t3 - t0);
}

static uint64_t checksum(const uint64_t *w, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ w[i]) * 0x100000001b3ull;
    return h;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        dprintf(2, "usage: %s MIB [NFORK]\n", argv[0]);
        return 2;
    }
    size_t len = (size_t)atol(argv[1]) << 20;
    int nfork = argc > 2 ? atoi(argv[2]) : 5;
    uint64_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    size_t n = len / 8;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) { /* xorshift64: non-zero, incompressible */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        mem[i] = x | 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_sigaction = on_usr2;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR2, &sa, NULL);

    dprintf(1, "READY pid=%d addr=%p len=%zu sum=%016llx\n", getpid(), (void *)mem, len,
            (unsigned long long)checksum(mem, n));
    for (;;) {
        if (want_sum) {
            want_sum = 0;
            char nspid[128];
            read_nspid(nspid, sizeof(nspid));
            say("SUM %016llx getpid=%d nspid=%s\n", (unsigned long long)checksum(mem, n), getpid(), nspid);
        }
        if (want_forkn) {
            int k = want_forkn;
            want_forkn = 0;
            fork_n(k);
        }
        if (want_fork) {
            want_fork = 0;
            for (int i = 0; i < nfork; i++) {
                double t0 = now_us();
                pid_t c = fork();
                if (c == 0)
                    _exit(0);
                double t1 = now_us();
                if (c < 0) {
                    dprintf(1, "FORK error\n");
                    break;
                }
                waitpid(c, NULL, 0);
                double t2 = now_us();
                dprintf(1, "FORK fork_us=%.1f total_us=%.1f\n", t1 - t0, t2 - t0);
            }
        }
        struct timespec ts = { 0, 50 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
}
