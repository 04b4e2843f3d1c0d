/* Target whose second thread sleeps in a raw nanosleep with its stack pointer on a
 * small stack inside a static buffer (as a coroutine or a Go goroutine runs), just
 * above bytes it checks: nothing may be written below a stack pointer that is not
 * on a real stack.  Prints READY; on SIGUSR1 prints "CHECK ok counter=N" or
 * "CHECK FAIL ...". */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define GUARD 16384
#define STACK 512
static unsigned char region[GUARD + STACK] __attribute__((aligned(64)));
static volatile sig_atomic_t asked;
static volatile uint64_t counter, laps;

static void on_usr1(int sig) { (void)sig; asked = 1; }

static void *sleeper(void *arg)
{
    (void)arg;
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    void *top = region + GUARD + STACK - 64;
    for (;;) {
        /* nanosleep(&ts, NULL) on the small stack, then back to our own */
        __asm__ volatile(
            "mov %%rsp, %%r12\n\t"
            "mov %[top], %%rsp\n\t"
            "mov %[nr], %%eax\n\t"
            "mov %[ts], %%rdi\n\t"
            "xor %%esi, %%esi\n\t"
            "syscall\n\t"
            "mov %%r12, %%rsp\n\t"
            :
            : [top] "r"(top), [nr] "i"(SYS_nanosleep), [ts] "r"(&ts)
            : "rax", "rdi", "rsi", "rcx", "r11", "r12", "memory");
        laps++;
    }
    return NULL;
}

int main(void)
{
    for (size_t i = 0; i < GUARD; i++)
        region[i] = (unsigned char)(i * 7 + 3);
    signal(SIGUSR1, on_usr1);
    pthread_t t;
    pthread_create(&t, NULL, sleeper, NULL);
    while (laps < 2)
        usleep(1000);
    printf("READY\n");
    fflush(stdout);
    for (;;) {
        counter++;
        if (asked) {
            asked = 0;
            size_t bad = 0;
            for (size_t i = 0; i < GUARD; i++)
                bad += region[i] != (unsigned char)(i * 7 + 3);
            uint64_t before = laps;
            while (laps == before)
                usleep(1000);
            if (bad)
                printf("CHECK FAIL %zu bytes below the small stack changed\n", bad);
            else
                printf("CHECK ok counter=%llu\n", (unsigned long long)counter);
            fflush(stdout);
        }
        usleep(5000);
    }
}
