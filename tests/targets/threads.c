/* Threads target: checks its own state after restore.
 *
 *  - 4 pthreads with __thread values of their own (TLS through fs_base)
 *  - two threads playing condvar ping-pong (a counter they hand back and forth)
 *  - one thread sleeping in nanosleep in a loop
 *  - SIGUSR2 blocked in every thread and sent to the process once: it stays
 *    pending (shared queue) until a check unblocks it in the checker thread
 *  - a SIGUSR1 handler that counts; SIGUSR1 is also the "check now" request
 * Prints READY, then on each SIGUSR1 one line `CHECK ok counter=N` or
 * `CHECK FAIL <what>`.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static __thread long tls_value;
static volatile sig_atomic_t usr1_count, usr2_seen;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static long ball;          /* odd: ping's turn to make it even; even: pong's */
static long sleeps;
static pid_t tids[4];
static long tls_seen[4];
static volatile int tls_ok[4] = {1, 1, 1, 1};

static void on_usr1(int s) { (void)s; usr1_count++; }
static void on_usr2(int s) { (void)s; usr2_seen = 1; }

static void keep_tls(int i, long v)
{
    tls_value = v;
    tids[i] = (pid_t)syscall(SYS_gettid);
}

static void *ping(void *arg)
{
    keep_tls(0, 1000);
    for (;;) {
        pthread_mutex_lock(&lock);
        while (ball % 2 == 0)
            pthread_cond_wait(&cond, &lock);
        ball++;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
        if (tls_value != 1000) tls_ok[0] = 0;
    }
    return arg;
}

static void *pong(void *arg)
{
    keep_tls(1, 2000);
    for (;;) {
        pthread_mutex_lock(&lock);
        while (ball % 2 == 1)
            pthread_cond_wait(&cond, &lock);
        ball++;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        if (tls_value != 2000) tls_ok[1] = 0;
    }
    return arg;
}

static void *sleeper(void *arg)
{
    keep_tls(2, 3000);
    for (;;) {
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
        __atomic_add_fetch(&sleeps, 1, __ATOMIC_SEQ_CST);
        if (tls_value != 3000) tls_ok[2] = 0;
    }
    return arg;
}

static void *idle(void *arg)
{
    keep_tls(3, 4000);
    for (;;) {
        pause();
        if (tls_value != 4000) tls_ok[3] = 0;
    }
    return arg;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr2, NULL); /* inherited by every thread */
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL); /* only main takes SIGUSR1 */

    pthread_t th[4];
    void *(*fn[4])(void *) = {ping, pong, sleeper, idle};
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, fn[i], NULL);
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    kill(getpid(), SIGUSR2); /* stays pending: blocked everywhere */
    tls_value = 5;
    struct timespec ts = {0, 200000000};
    nanosleep(&ts, NULL);
    printf("READY\n");

    long counter = 0, seen_checks = 0;
    for (;;) {
        struct timespec t = {0, 20000000};
        nanosleep(&t, NULL);
        counter++;
        if (usr1_count == seen_checks)
            continue;
        seen_checks = usr1_count;
        char bad[512] = "";
        long b1, s1;
        pthread_mutex_lock(&lock);
        b1 = ball;
        pthread_mutex_unlock(&lock);
        s1 = sleeps;
        struct timespec w = {0, 300000000};
        nanosleep(&w, NULL);
        pthread_mutex_lock(&lock);
        long b2 = ball;
        pthread_mutex_unlock(&lock);
        if (b2 <= b1 + 5) strcat(bad, " ping-pong stalled");
        if (sleeps <= s1) strcat(bad, " sleeper stalled");
        if (tls_value != 5) strcat(bad, " main TLS");
        for (int i = 0; i < 4; i++) {
            if (!tls_ok[i]) strcat(bad, " thread TLS");
            char path[64];
            snprintf(path, sizeof path, "/proc/self/task/%d", tids[i]);
            if (access(path, F_OK) != 0) strcat(bad, " thread missing");
        }
        sigset_t pending;
        sigpending(&pending);
        if (!sigismember(&pending, SIGUSR2)) strcat(bad, " SIGUSR2 not pending");
        if (usr2_seen) strcat(bad, " SIGUSR2 delivered early");
        if (bad[0])
            printf("CHECK FAIL%s\n", bad);
        else
            printf("CHECK ok counter=%ld\n", counter);
    }
}
