/* Benchmark target for bench/bench.py.
 *
 *   target MIB [NFORK]
 *
 * Maps MIB MiB of private anonymous memory, writes non-zero pseudo-random
 * data to every byte, prints
 *     READY pid=P addr=0xA len=L sum=S
 * and sleeps in a loop (nanosleep, 50 ms).  Single-threaded, no libc stdio
 * buffering (everything goes out with dprintf on fd 1).
 *
 *   SIGUSR1: recompute the checksum of the memory and print "SUM S"
 *            (bench.py checks a restored copy with it).
 *   SIGUSR2: time NFORK (default 5) fork() calls, each child _exit(0)s at
 *            once; per fork print
 *                FORK fork_us=F total_us=T
 *            F: fork() call to the parent's return from it (page tables
 *               copied, pages write-protected: the freeze a CoW snapshot needs)
 *            T: fork() call to waitpid() returning (child exit and its mm
 *               torn down too).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_fork, want_sum;

static void on_usr1(int s) { (void)s; want_sum = 1; }
static void on_usr2(int s) { (void)s; want_fork = 1; }

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
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
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);

    dprintf(1, "READY pid=%d addr=%p len=%zu sum=%016llx\n", getpid(), (void *)mem, len,
            (unsigned long long)checksum(mem, n));
    for (;;) {
        if (want_sum) {
            want_sum = 0;
            dprintf(1, "SUM %016llx\n", (unsigned long long)checksum(mem, n));
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
