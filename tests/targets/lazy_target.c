/* Lazy restore target: a large buffer whose every word it can recompute, and
 * commands that touch it in random order after a (lazy) restore.
 *
 *   lazy_target MIB [threads|tree|sparse]
 *
 * Word w of the buffer is mix(seed + w), seed random at start: a page read back
 * with wrong contents (a zero page where the image had data, another page's
 * data) fails the check.  Signals, each answered by one log line:
 *   SIGUSR1  every page checked, pages in random order            CHECK ok|FAIL
 *            (threads: 4 threads, each a quarter, in random order)
 *   SIGUSR2  fork; the child checks its copy and exits, the parent
 *            checks its own, then reaps the child             CHILD ok|FAIL, PARENT ok|FAIL
 *   SIGHUP   MADV_DONTNEED of the second quarter: it reads zeros, the rest
 *            the buffer                                          DONTNEED ok|FAIL
 *   SIGURG   mremap of the third quarter elsewhere: it moved intact  REMAP ok|FAIL
 *   SIGTTIN  exec sleep 1000                                          EXEC
 *   SIGWINCH fork a child that stays; it checks its copy on SIGUSR1  FORKED PID,
 *                                                              FORKED CHECK ok|FAIL
 *   SIGALRM  the first half of the buffer checked, in random order     HALF ok|FAIL
 * tree: a child forked at start (before the dump) checks its copy on SIGUSR1.
 * sparse: only even pages are written; odd ones must read zeros (an image with
 * a run per page: thousands of them).
 * Prints READY PID BUFFER-ADDRESS (and CHILD-READY for tree) once the buffer is
 * filled. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PG 4096UL
#define WPP (PG / 8)

static uint64_t *buf;
static size_t npages;
static uint64_t seed;
static unsigned rnd;
static int nthreads;
static int sparse;  /* only even pages written: odd ones never touched (read as zeros) */
static int go[2], done_pipe[2];

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static unsigned next(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 1;
}

/* Check pages [lo, hi) of `base` (page index offset `first` in the buffer) in
 * random order; returns the first bad page index + 1, or 0. */
static size_t check_range(const uint64_t *base, size_t lo, size_t hi, size_t first, unsigned *rs, int zero)
{
    size_t n = hi - lo;
    if (!n)
        return 0;
    size_t *order = malloc(n * sizeof(size_t));
    for (size_t i = 0; i < n; i++)
        order[i] = lo + i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = next(rs) % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    size_t bad = 0;
    for (size_t k = 0; k < n && !bad; k++) {
        size_t p = order[k];
        const uint64_t *w = base + (p - first) * WPP;
        int z = zero || (sparse && (p & 1));
        for (size_t i = 0; i < WPP; i++) {
            size_t k = (i * 7) % WPP;  /* the page's words out of order too */
            if (w[k] != (z ? 0 : mix(seed + p * WPP + k))) {
                bad = p + 1;
                break;
            }
        }
    }
    free(order);
    return bad;
}

static void report(const char *what, size_t bad)
{
    if (bad)
        printf("%s FAIL page %zu\n", what, bad - 1);
    else
        printf("%s ok\n", what);
    fflush(stdout);
}

static void *worker(void *arg)
{
    long i = (long)arg;
    unsigned rs = rnd ^ (unsigned)(i * 7919);
    for (;;) {
        char c;
        if (read(go[0], &c, 1) != 1)
            continue;
        size_t q = npages / nthreads;
        size_t bad = check_range(buf, i * q, i == nthreads - 1 ? npages : (i + 1) * q, 0, &rs, 0);
        long res = bad ? (long)bad : 0;
        if (write(done_pipe[1], &res, sizeof(res)) != sizeof(res))
            abort();
    }
    return NULL;
}

static size_t check_all(void)
{
    if (!nthreads)
        return check_range(buf, 0, npages, 0, &rnd, 0);
    for (int i = 0; i < nthreads; i++)
        if (write(go[1], "g", 1) != 1)
            abort();
    size_t bad = 0;
    for (int i = 0; i < nthreads; i++) {
        long res;
        if (read(done_pipe[0], &res, sizeof(res)) != sizeof(res))
            abort();
        if (res && !bad)
            bad = (size_t)res;
    }
    return bad;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
    const char *mode = argc > 2 ? argv[2] : "";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = mix((uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32));
    rnd = (unsigned)seed;
    npages = mib * 256;
    buf = mmap(NULL, npages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        return 1;
    sparse = !strcmp(mode, "sparse");
    for (size_t w = 0; w < npages * WPP; w++)
        if (!sparse || !((w / WPP) & 1))
            buf[w] = mix(seed + w);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGURG);
    sigaddset(&set, SIGWINCH);
    sigaddset(&set, SIGTTIN);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    if (!strcmp(mode, "threads")) {
        nthreads = 4;
        if (pipe(go) || pipe(done_pipe))
            return 1;
        for (long i = 0; i < nthreads; i++) {
            pthread_t t;
            pthread_create(&t, NULL, worker, (void *)i);
        }
    }
    if (!strcmp(mode, "tree")) {
        pid_t c = fork();
        if (c == 0) {
            rnd ^= 0x5555;
            printf("CHILD-READY %d\n", getpid());
            fflush(stdout);
            for (;;) {
                int sig;
                sigwait(&set, &sig);
                if (sig == SIGUSR1)
                    report("TREE-CHILD CHECK", check_range(buf, 0, npages, 0, &rnd, 0));
            }
        }
    }
    printf("READY %d %lx\n", getpid(), (unsigned long)buf);
    fflush(stdout);
    for (;;) {
        int sig;
        sigwait(&set, &sig);
        if (sig == SIGUSR1) {
            report("CHECK", check_all());
        } else if (sig == SIGALRM) {
            report("HALF", check_range(buf, 0, npages / 2, 0, &rnd, 0));
        } else if (sig == SIGUSR2) {
            pid_t c = fork();
            if (c == 0) {
                rnd ^= 0xabcd;
                size_t bad = check_range(buf, 0, npages, 0, &rnd, 0);
                report("CHILD", bad);
                _exit(bad ? 1 : 0);
            }
            report("PARENT", check_range(buf, 0, npages, 0, &rnd, 0));
            int st;
            waitpid(c, &st, 0);
        } else if (sig == SIGHUP) {
            size_t q = npages / 4;
            madvise((char *)buf + q * PG, q * PG, MADV_DONTNEED);
            size_t bad = check_range(buf + q * WPP, q, 2 * q, q, &rnd, 1);
            if (!bad)
                bad = check_range(buf, 0, q, 0, &rnd, 0);
            if (!bad)
                bad = check_range(buf, 2 * q, npages, 0, &rnd, 0);
            report("DONTNEED", bad);
        } else if (sig == SIGWINCH) {  /* a child that stays, checking on SIGUSR1 */
            pid_t c = fork();
            if (c == 0) {
                rnd ^= 0x1234;
                printf("FORKED %d\n", getpid());
                fflush(stdout);
                for (;;) {
                    sigwait(&set, &sig);
                    if (sig == SIGUSR1)
                        report("FORKED CHECK", check_range(buf, 0, npages, 0, &rnd, 0));
                }
            }
        } else if (sig == SIGTTIN) {  /* another program: this memory is gone */
            printf("EXEC\n");
            fflush(stdout);
            execl("/bin/sleep", "sleep", "1000", (char *)NULL);
            printf("EXEC FAIL\n");
            fflush(stdout);
        } else if (sig == SIGURG) {
            size_t q = npages / 4;
            char *old = (char *)buf + 2 * q * PG;
            char *to = mmap(NULL, q * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            void *moved = mremap(old, q * PG, q * PG, MREMAP_MAYMOVE | MREMAP_FIXED, to);
            size_t bad = moved == MAP_FAILED ? 1 : check_range(moved, 2 * q, 3 * q, 2 * q, &rnd, 0);
            if (!bad)
                bad = check_range(buf, 0, 2 * q, 0, &rnd, 0);
            if (!bad)
                bad = check_range(buf, 3 * q, npages, 0, &rnd, 0);
            report("REMAP", bad);
        }
    }
}
