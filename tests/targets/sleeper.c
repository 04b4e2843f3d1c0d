/* A target blocked in one syscall: `sleeper pause|nanosleep|read`.
 * Prints READY, blocks, then prints WOKE with the call's result.
 * SIGUSR1 has a handler (no SA_RESTART) that prints SIG. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void on_usr1(int sig) { (void)sig; write(1, "SIG\n", 4); }

int main(int argc, char **argv)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *mode = argc > 1 ? argv[1] : "pause";
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    printf("READY %s\n", mode);
    long r;
    char c;
    if (!strcmp(mode, "nanosleep")) {
        struct timespec ts = { 2, 0 };
        r = nanosleep(&ts, NULL);
    } else if (!strcmp(mode, "read")) {
        r = read(0, &c, 1);
    } else {
        r = pause();
    }
    int e = errno;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("WOKE %s ret=%ld errno=%d took=%.3f\n", mode, r, r < 0 ? e : 0, took);
    for (;;)
        pause();
}
