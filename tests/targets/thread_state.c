/* Many threads, each with state only the thread itself can read back (a dump
 * reads it with a call injected into that thread): a sigaltstack of its own
 * size and a parent-death signal of its own.
 *
 * The root forks a child and passes SIGUSR1 on to it; the child (the parent-
 * death signal comes back below the image's root only) runs NTHREADS threads
 * beside its main thread.  Each thread, every 2 ms, reads its own altstack and
 * parent-death signal and marks itself bad if they are not the ones it set.
 * The child prints READY when every thread has started, and on each SIGUSR1
 * `CHECK ok counter=N` once every thread has gone round again meanwhile, or
 * `CHECK FAIL <what>`.  Its main thread's parent-death signal is SIGKILL: it
 * ends with the root.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define NTHREADS 70 /* more than the 64 a page of the dump's result slots holds */

static volatile long rounds[NTHREADS + 1];
static volatile int bad[NTHREADS + 1];
static volatile int started;
static volatile sig_atomic_t asked;
static pid_t child;

static void on_usr1(int s) { (void)s; asked = 1; }
static void pass_on(int s) { (void)s; kill(child, SIGUSR1); }

static void *mem_of[NTHREADS + 1];
static size_t size_of[NTHREADS + 1];
static int sig_of[NTHREADS + 1];

/* Slot i (NTHREADS: the main thread) sets its altstack and parent-death signal. */
static void keep(long i, int sig)
{
    size_of[i] = 65536 + (size_t)i * 4096;
    mem_of[i] = malloc(size_of[i]);
    sig_of[i] = sig;
    stack_t ss = { .ss_sp = mem_of[i], .ss_flags = 0, .ss_size = size_of[i] };
    if (!mem_of[i] || sigaltstack(&ss, NULL) || prctl(PR_SET_PDEATHSIG, sig))
        bad[i] = 2;
    __sync_fetch_and_add(&started, 1);
}

/* Whether the calling thread, slot i, still has them; marks it bad if not. */
static void verify(long i)
{
    stack_t now;
    int got = -1;
    if (sigaltstack(NULL, &now) || prctl(PR_GET_PDEATHSIG, &got) || now.ss_sp != mem_of[i]
        || now.ss_size != size_of[i] || now.ss_flags != 0 || got != sig_of[i])
        bad[i] = 1;
    rounds[i]++;
}

static void *worker(void *arg)
{
    long i = (long)arg;
    keep(i, 34 + (int)(i % 28)); /* SIGRTMIN..: one of its own */
    for (;;) {
        verify(i);
        usleep(2000);
    }
    return NULL;
}

static int check(void)
{
    long before[NTHREADS + 1];
    verify(NTHREADS);
    for (int i = 0; i < NTHREADS; i++)
        before[i] = rounds[i];
    for (int tries = 0; tries < 500; tries++) {
        int behind = 0;
        for (int i = 0; i < NTHREADS; i++)
            behind += rounds[i] == before[i];
        if (!behind)
            break;
        usleep(2000);
    }
    for (int i = 0; i <= NTHREADS; i++) {
        if (bad[i]) {
            printf("CHECK FAIL thread %d: its altstack or parent-death signal changed (%d)\n", i, bad[i]);
            return 0;
        }
        if (i < NTHREADS && rounds[i] == before[i]) {
            printf("CHECK FAIL thread %d stopped going round\n", i);
            return 0;
        }
    }
    return 1;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGUSR1, on_usr1);
    child = fork();
    if (child < 0)
        return 1;
    if (child > 0) {
        signal(SIGUSR1, pass_on);
        for (;;)
            pause();
    }
    keep(NTHREADS, SIGKILL);
    /* SIGUSR1 is the main thread's alone (the workers inherit it blocked): a signal to the
     * process goes to any thread that does not block it, and only main checks */
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    for (long i = 0; i < NTHREADS; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, (void *)i) != 0) {
            printf("FAIL pthread_create\n");
            return 1;
        }
    }
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    while (started < NTHREADS + 1)
        usleep(1000);
    printf("READY\n");
    long counter = 0;
    for (;;) {
        while (!asked)  /* (not pause(): a request that came while checking would wait) */
            usleep(1000);
        asked = 0;
        if (check())
            printf("CHECK ok counter=%ld\n", ++counter);
    }
}
