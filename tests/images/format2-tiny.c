/* The smallest process worth an image: no libc, it sleeps in pause(). */
#include <sys/syscall.h>
static long sys0(long n) { long r; __asm__ volatile ("syscall" : "=a"(r) : "a"(n) : "rcx", "r11", "memory"); return r; }
char counter[64] = "pyckpt format fixture";
void _start(void) { for (;;) sys0(SYS_pause); }
