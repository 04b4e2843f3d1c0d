/* Threads blocked in calls a dump interrupts, each checking every result it gets.
 *
 * Nothing ever sends SIGUSR2, writes the pipes or wakes the futex word, so each
 * call may only time out (or, for read, never return) or fail with EINTR; any
 * other result is printed as "BAD ..." and counted.  Every 100 ms the main
 * thread prints "STAT" with each thread's completed calls and EINTRs. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { SIGWAIT, POLL, EPOLL, SLEEP, FUTEX, READ, NKIND };
static const char *names[NKIND] = {"sigtimedwait", "poll", "epoll", "nanosleep", "futex", "read"};
static atomic_long calls[NKIND], eintrs[NKIND], bad;
static int pipe_poll[2], pipe_read[2], ep;
static atomic_int word;

static void report(int k, long r, int e) {
    atomic_fetch_add(&bad, 1);
    printf("BAD %s returned %ld errno %d (%s)\n", names[k], r, e, strerror(e));
    fflush(stdout);
}

static void count(int k, long r, int e, long ok_r, int ok_e) {
    if (r == ok_r && (r != -1 || e == ok_e)) {
        atomic_fetch_add(&calls[k], 1);
    } else if (r == -1 && e == EINTR) {
        atomic_fetch_add(&calls[k], 1);
        atomic_fetch_add(&eintrs[k], 1);
    } else {
        report(k, r, e);
    }
}

static void *run(void *arg) {
    int k = (int)(long)arg;
    for (;;) {
        long r;
        if (k == SIGWAIT) {
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, SIGUSR2);
            siginfo_t si;
            struct timespec ts = {0, 200 * 1000 * 1000};
            r = sigtimedwait(&set, &si, &ts);
            count(k, r, errno, -1, EAGAIN);
        } else if (k == POLL) {
            struct pollfd p = {pipe_poll[0], POLLIN, 0};
            r = poll(&p, 1, 300);
            count(k, r, errno, 0, 0);
        } else if (k == EPOLL) {
            struct epoll_event ev;
            r = epoll_wait(ep, &ev, 1, 250);
            count(k, r, errno, 0, 0);
        } else if (k == SLEEP) {
            struct timespec ts = {0, 150 * 1000 * 1000};
            r = nanosleep(&ts, NULL);
            count(k, r, errno, 0, 0);
        } else if (k == FUTEX) {
            struct timespec ts = {0, 400 * 1000 * 1000};
            r = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
            count(k, r, errno, -1, ETIMEDOUT);
        } else {
            char c;
            r = read(pipe_read[0], &c, 1);
            report(k, r, errno); /* nobody writes nor closes the write end */
        }
    }
    return NULL;
}

int main(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread inherits it */
    if (pipe(pipe_poll) || pipe(pipe_read)) return 1;
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, pipe_poll[0], &ev)) return 1;
    for (long k = 0; k < NKIND; k++) {
        pthread_t t;
        if (pthread_create(&t, NULL, run, (void *)k)) return 1;
    }
    printf("READY %d\n", getpid());
    fflush(stdout);
    for (;;) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        while (nanosleep(&ts, &ts) != 0) {}
        printf("STAT bad=%ld", atomic_load(&bad));
        for (int k = 0; k < NKIND; k++)
            printf(" %s=%ld/%ld", names[k], atomic_load(&calls[k]), atomic_load(&eintrs[k]));
        printf("\n");
        fflush(stdout);
    }
}
