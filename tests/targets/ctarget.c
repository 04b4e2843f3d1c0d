/* C test target for pyckpt: holds many kinds of state and verifies them itself.
 *
 * Usage: ctarget MAPFILE
 *   MAPFILE: a file of MAP_PAGES pages written by the test; word w of page p
 *            is FILE_WORD(p, w) (see below).  It is mapped MAP_PRIVATE and
 *            page MOD_PAGE is modified in memory only.
 *
 * Prints READY once set up, then loops forever (~20 ms per iteration, spent in
 * a raw nanosleep syscall while ymm8-ymm15 and r12-r15 hold known values).
 * Prints "TICK n" every 50 iterations.  On SIGUSR1 it verifies everything and
 * prints "CHECK ok counter=N" or "CHECK FAIL <what failed>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fenv.h>
#include <float.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define HEAP_BYTES (64UL << 20)
#define HEAP_SEED 0x9E3779B97F4A7C15ULL
#define RO_SEED 0x0123456789ABCDEFULL
#define SHARED_PAGES 16
#define SHARED_SEED 0xD1B54A32D192ED03ULL
#define MAP_PAGES 8
#define MOD_PAGE 3
#define FILE_WORD(p, w) (0xF11E000000000000ULL | ((uint64_t)(p) << 32) | (uint64_t)(w))
#define MOD_WORD(w) (0x3D1F1ED000000000ULL | (uint64_t)(w))
#define DEPTH 2000
#define FRAME_WORDS 16
#define NREGS 8

/* Expected control words: FE_UPWARD (RC=10) plus a changed x87 precision
 * control (53-bit, PC=10) and MXCSR with FTZ and DAZ set. */
#define X87_CW_EXPECTED 0x0A7F /* 0x037F default: PC=11 -> 10, RC=00 -> 10 */
#define MXCSR_EXPECTED (0x1F80 | (2u << 13) | (1u << 15) | (1u << 6))

static volatile sig_atomic_t check_requested;
static uint64_t counter;
static uint64_t last_checked_counter;
static pid_t initial_pid;
static const char *map_path;

static uint64_t *heap;
static uint64_t *ro_page;
static uint64_t *file_map;
static uint64_t *shared_anon;

struct frame {
    struct frame *parent;
    uint64_t depth;
    uint64_t vals[FRAME_WORDS];
};
static struct frame *frames[DEPTH];

/* register check state, written by the asm loop */
static uint64_t reg_mismatches;
static uint64_t reg_first_bad_iter;
static long bad_syscall_ret;

static char fail[4096];

static void on_usr1(int sig)
{
    (void)sig;
    check_requested = 1;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void add_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void add_fail(const char *fmt, ...)
{
    size_t n = strlen(fail);
    if (n > sizeof fail - 200)
        return;
    if (n)
        fail[n++] = ' ';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fail + n, sizeof fail - n, fmt, ap);
    va_end(ap);
}

static inline uint64_t lcg(uint64_t x)
{
    return x * 6364136223846793005ULL + 1442695040888963407ULL;
}

static uint64_t frame_word(uint64_t depth, int j)
{
    return lcg(depth * 0x100000001B3ULL + (uint64_t)j) ^ 0xC0FFEE0000000000ULL;
}

static uint64_t reg_value(uint64_t iter, int reg, int lane)
{
    return lcg(lcg(iter) ^ ((uint64_t)reg << 8) ^ (uint64_t)lane);
}

static void die(const char *what)
{
    say("SETUP FAIL %s: %s", what, strerror(errno));
    exit(1);
}

/* ---- FPU ---- */

static void set_fpu_state(void)
{
    if (fesetround(FE_UPWARD) != 0)
        die("fesetround");
    uint16_t cw;
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    cw = (uint16_t)((cw & ~0x0300) | 0x0200); /* precision control: 53 bits */
    __asm__ volatile("fldcw %0" : : "m"(cw));
    uint32_t mxcsr;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    mxcsr |= (1u << 15) | (1u << 6); /* FTZ, DAZ */
    __asm__ volatile("ldmxcsr %0" : : "m"(mxcsr));
}

static void check_fpu(void)
{
    if (fegetround() != FE_UPWARD)
        add_fail("fegetround=%d", fegetround());
    uint16_t cw;
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    if (cw != X87_CW_EXPECTED)
        add_fail("x87_cw=%#x(expected %#x)", cw, X87_CW_EXPECTED);
    uint32_t mxcsr;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    /* ignore the sticky exception flags (bits 0-5) */
    if ((mxcsr & ~0x3Fu) != MXCSR_EXPECTED)
        add_fail("mxcsr=%#x(expected %#x)", mxcsr, MXCSR_EXPECTED);

    /* SSE arithmetic that depends on the rounding mode */
    volatile double one = 1.0, three = 3.0, mone = -1.0;
    double third = one / three, mthird = mone / three;
    uint64_t bits, mbits;
    memcpy(&bits, &third, 8);
    memcpy(&mbits, &mthird, 8);
    if (bits != 0x3FD5555555555556ULL) /* nearest would give ...555 */
        add_fail("1/3=%#" PRIx64 "(not rounded upward)", bits);
    if (mbits != 0xBFD5555555555555ULL) /* upward: toward +inf */
        add_fail("-1/3=%#" PRIx64 "(not rounded upward)", mbits);
    /* FTZ: a result that would be subnormal is flushed to zero */
    volatile double tiny = DBL_MIN, half = 0.5;
    double sub = tiny * half;
    if (sub != 0.0)
        add_fail("ftz_off(DBL_MIN*0.5=%g)", sub);
    /* x87 arithmetic: rounds upward to 53 bits (precision control) */
    volatile long double lone = 1.0L, lthree = 3.0L;
    long double lthird = lone / lthree;
    if ((double)lthird != third || lthird != (long double)third)
        add_fail("x87_1/3_not_53bit_upward");
}

/* ---- memory ---- */

static void fill_heap(void)
{
    heap = malloc(HEAP_BYTES);
    if (!heap)
        die("malloc");
    uint64_t x = HEAP_SEED;
    for (size_t i = 0; i < HEAP_BYTES / 8; i++) {
        x = lcg(x);
        heap[i] = x;
    }
}

static void check_heap(void)
{
    uint64_t x = HEAP_SEED;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < HEAP_BYTES / 8; i++) {
        x = lcg(x);
        if (heap[i] != x) {
            if (!bad)
                first = i;
            bad++;
        }
    }
    if (bad)
        add_fail("heap(%zu bad words, first at byte %#zx)", bad, first * 8);
}

/* perms of the mapping containing addr, from /proc/self/maps; path optional */
static int maps_entry(const void *addr, char perms[5], char *path, size_t pathlen)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[4096];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char p[5];
        int off = 0;
        if (sscanf(line, "%lx-%lx %4s %*x %*x:%*x %*u%n", &lo, &hi, p, &off) < 3)
            continue;
        if ((unsigned long)addr >= lo && (unsigned long)addr < hi) {
            memcpy(perms, p, 5);
            if (path) {
                char *s = line + off;
                while (*s == ' ')
                    s++;
                s[strcspn(s, "\n")] = 0;
                snprintf(path, pathlen, "%s", s);
            }
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static void check_perms(const char *what, const void *addr, const char *want, const char *want_path)
{
    char perms[5], path[4096];
    if (maps_entry(addr, perms, path, sizeof path) != 0) {
        add_fail("%s_unmapped", what);
        return;
    }
    if (strcmp(perms, want) != 0)
        add_fail("%s_perms=%s(expected %s)", what, perms, want);
    if (want_path && strcmp(path, want_path) != 0)
        add_fail("%s_path=%s(expected %s)", what, path, want_path);
}

static void setup_ro_page(void)
{
    ro_page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ro_page == MAP_FAILED)
        die("mmap ro");
    uint64_t x = RO_SEED;
    for (int i = 0; i < PAGE / 8; i++)
        ro_page[i] = x = lcg(x);
    if (mprotect(ro_page, PAGE, PROT_READ) != 0)
        die("mprotect");
}

static void check_ro_page(void)
{
    uint64_t x = RO_SEED;
    for (int i = 0; i < PAGE / 8; i++) {
        x = lcg(x);
        if (ro_page[i] != x) {
            add_fail("ro_page(word %d)", i);
            break;
        }
    }
    check_perms("ro_page", ro_page, "r--p", NULL);
}

static void setup_file_map(void)
{
    int fd = open(map_path, O_RDONLY);
    if (fd < 0)
        die("open mapfile");
    file_map = mmap(NULL, MAP_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (file_map == MAP_FAILED)
        die("mmap file");
    close(fd);
    for (int p = 0; p < MAP_PAGES; p++)
        for (int w = 0; w < PAGE / 8; w++)
            if (file_map[p * (PAGE / 8) + w] != FILE_WORD(p, w)) {
                errno = EINVAL;
                die("mapfile content is not the expected pattern");
            }
    for (int w = 0; w < PAGE / 8; w++)
        file_map[MOD_PAGE * (PAGE / 8) + w] = MOD_WORD(w);
}

static void check_file_map(void)
{
    for (int p = 0; p < MAP_PAGES; p++) {
        for (int w = 0; w < PAGE / 8; w++) {
            uint64_t want = p == MOD_PAGE ? MOD_WORD(w) : FILE_WORD(p, w);
            if (file_map[p * (PAGE / 8) + w] != want) {
                add_fail("file_map(page %d word %d: %#" PRIx64 ")", p, w, file_map[p * (PAGE / 8) + w]);
                p = MAP_PAGES;
                break;
            }
        }
    }
    /* the file itself must be unmodified (the change was private) */
    int fd = open(map_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        add_fail("mapfile_open(%s)", strerror(errno));
    } else {
        static uint64_t page[PAGE / 8];
        if (pread(fd, page, PAGE, MOD_PAGE * PAGE) != PAGE)
            add_fail("mapfile_pread");
        else
            for (int w = 0; w < PAGE / 8; w++)
                if (page[w] != FILE_WORD(MOD_PAGE, w)) {
                    add_fail("mapfile_on_disk_modified");
                    break;
                }
        close(fd);
    }
    char real[4096];
    if (!realpath(map_path, real))
        snprintf(real, sizeof real, "%s", map_path);
    check_perms("file_map", file_map, "rw-p", real);
}

static void setup_shared(void)
{
    shared_anon = mmap(NULL, SHARED_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared_anon == MAP_FAILED)
        die("mmap shared");
    uint64_t x = SHARED_SEED;
    for (size_t i = 1; i < SHARED_PAGES * PAGE / 8; i++)
        shared_anon[i] = x = lcg(x);
    shared_anon[0] = 0; /* holds a copy of the counter */
}

static void check_shared(void)
{
    uint64_t x = SHARED_SEED;
    for (size_t i = 1; i < SHARED_PAGES * PAGE / 8; i++) {
        x = lcg(x);
        if (shared_anon[i] != x) {
            add_fail("shared_anon(word %zu)", i);
            break;
        }
    }
    if (shared_anon[0] != counter)
        add_fail("shared_anon_counter=%" PRIu64 "(counter %" PRIu64 ")", shared_anon[0], counter);
    check_perms("shared_anon", shared_anon, "rw-s", NULL);
}

/* ---- stack ---- */

static void check_stack(void)
{
    for (int d = 0; d < DEPTH; d++) {
        struct frame *f = frames[d];
        if (f->depth != (uint64_t)d || f->parent != (d ? frames[d - 1] : NULL)) {
            add_fail("stack_frame_link(depth %d)", d);
            return;
        }
        for (int j = 0; j < FRAME_WORDS; j++)
            if (f->vals[j] != frame_word(d, j)) {
                add_fail("stack_frame_value(depth %d word %d)", d, j);
                return;
            }
    }
    /* walk the parent links from the bottom too */
    int n = 0;
    for (struct frame *f = frames[DEPTH - 1]; f; f = f->parent)
        n++;
    if (n != DEPTH)
        add_fail("stack_walk=%d", n);
}

/* ---- registers across a raw syscall ---- */

/* Loads ymm8-ymm15 and r12-r15 from `in`, runs nanosleep as a raw syscall,
 * stores the registers back to `out`; returns the syscall's result. */
static long regs_across_syscall(const uint64_t in[NREGS][4], const uint64_t gin[4],
                                uint64_t out[NREGS][4], uint64_t gout[4], const struct timespec *ts)
{
    long ret;
    __asm__ volatile(
        "vmovdqu 0(%[in]), %%ymm8\n\t"
        "vmovdqu 32(%[in]), %%ymm9\n\t"
        "vmovdqu 64(%[in]), %%ymm10\n\t"
        "vmovdqu 96(%[in]), %%ymm11\n\t"
        "vmovdqu 128(%[in]), %%ymm12\n\t"
        "vmovdqu 160(%[in]), %%ymm13\n\t"
        "vmovdqu 192(%[in]), %%ymm14\n\t"
        "vmovdqu 224(%[in]), %%ymm15\n\t"
        "movq 0(%[gin]), %%r12\n\t"
        "movq 8(%[gin]), %%r13\n\t"
        "movq 16(%[gin]), %%r14\n\t"
        "movq 24(%[gin]), %%r15\n\t"
        "movq %[ts], %%rdi\n\t"
        "xorl %%esi, %%esi\n\t"
        "movl %[nr], %%eax\n\t"
        "syscall\n\t"
        "vmovdqu %%ymm8, 0(%[out])\n\t"
        "vmovdqu %%ymm9, 32(%[out])\n\t"
        "vmovdqu %%ymm10, 64(%[out])\n\t"
        "vmovdqu %%ymm11, 96(%[out])\n\t"
        "vmovdqu %%ymm12, 128(%[out])\n\t"
        "vmovdqu %%ymm13, 160(%[out])\n\t"
        "vmovdqu %%ymm14, 192(%[out])\n\t"
        "vmovdqu %%ymm15, 224(%[out])\n\t"
        "movq %%r12, 0(%[gout])\n\t"
        "movq %%r13, 8(%[gout])\n\t"
        "movq %%r14, 16(%[gout])\n\t"
        "movq %%r15, 24(%[gout])\n\t"
        : "=&a"(ret)
        : [in] "r"(in), [gin] "r"(gin), [out] "r"(out), [gout] "r"(gout), [ts] "r"(ts),
          [nr] "i"(SYS_nanosleep)
        : "rdi", "rsi", "rcx", "r11", "r12", "r13", "r14", "r15", "xmm8", "xmm9", "xmm10", "xmm11",
          "xmm12", "xmm13", "xmm14", "xmm15", "memory");
    return ret;
}

static void iteration(void)
{
    static uint64_t in[NREGS][4] __attribute__((aligned(32)));
    static uint64_t out[NREGS][4] __attribute__((aligned(32)));
    static uint64_t gin[4], gout[4];
    static const struct timespec ts = {0, 20 * 1000 * 1000};

    for (int r = 0; r < NREGS; r++)
        for (int l = 0; l < 4; l++)
            in[r][l] = reg_value(counter, r, l);
    for (int r = 0; r < 4; r++)
        gin[r] = reg_value(counter, 100 + r, 0);
    memset(out, 0, sizeof out);
    memset(gout, 0, sizeof gout);

    long ret = regs_across_syscall(in, gin, out, gout, &ts);
    if (ret != 0 && ret != -EINTR && !bad_syscall_ret)
        bad_syscall_ret = ret;
    if (memcmp(in, out, sizeof in) != 0 || memcmp(gin, gout, sizeof gin) != 0) {
        if (!reg_mismatches)
            reg_first_bad_iter = counter;
        reg_mismatches++;
    }
}

/* ---- standard fds ---- */

static int std_flags[3];
static char std_links[3][4096];

static int fd_target(int fd, char *buf, size_t len)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, buf, len - 1);
    if (n < 0) {
        snprintf(buf, len, "?");
        return -1;
    }
    buf[n] = 0;
    return 0;
}

static void record_std_fds(void)
{
    for (int fd = 0; fd < 3; fd++) {
        std_flags[fd] = fcntl(fd, F_GETFL);
        if (std_flags[fd] < 0 || fd_target(fd, std_links[fd], sizeof std_links[fd]) != 0)
            die("standard fd");
    }
}

/* ---- main loop and verification ---- */

static __attribute__((noinline)) void verify(void)
{
    fail[0] = 0;
    if (getpid() != initial_pid)
        add_fail("pid=%d(expected %d)", (int)getpid(), (int)initial_pid);
    if (counter <= last_checked_counter)
        add_fail("counter_not_increasing(%" PRIu64 "<=%" PRIu64 ")", counter, last_checked_counter);
    if (reg_mismatches)
        add_fail("registers_changed_across_syscall(%" PRIu64 " times, first at iteration %" PRIu64 ")",
                 reg_mismatches, reg_first_bad_iter);
    if (bad_syscall_ret)
        add_fail("nanosleep_returned=%ld", bad_syscall_ret);
    check_fpu();
    check_heap();
    check_ro_page();
    check_file_map();
    check_shared();
    check_stack();
    /* stdout is the log file and only we write it: its offset is its size */
    struct stat st;
    off_t pos = lseek(1, 0, SEEK_CUR);
    if (fstat(1, &st) != 0 || pos != st.st_size)
        add_fail("stdout_offset=%lld(size %lld)", (long long)pos, (long long)st.st_size);
    for (int fd = 0; fd < 3; fd++) {
        char link[4096];
        int fl = fcntl(fd, F_GETFL);
        if (fl != std_flags[fd])
            add_fail("fd%d_flags=%#x(expected %#x)", fd, fl, std_flags[fd]);
        if (fd_target(fd, link, sizeof link) != 0 || strcmp(link, std_links[fd]) != 0)
            add_fail("fd%d_file=%s(expected %s)", fd, link, std_links[fd]);
    }
    sigset_t cur;
    sigprocmask(SIG_SETMASK, NULL, &cur);
    if (sigismember(&cur, SIGUSR1))
        add_fail("sigusr1_blocked");
    struct sigaction sa;
    sigaction(SIGUSR1, NULL, &sa);
    if (sa.sa_handler != on_usr1)
        add_fail("sigusr1_handler_lost");

    if (fail[0])
        say("CHECK FAIL %s", fail);
    else
        say("CHECK ok counter=%" PRIu64, counter);
    last_checked_counter = counter;
}

static __attribute__((noinline)) void run_loop(void)
{
    while (counter != UINT64_MAX) {
        iteration();
        counter++;
        shared_anon[0] = counter;
        if (counter % 50 == 0)
            say("TICK %" PRIu64, counter);
        if (check_requested) {
            check_requested = 0;
            verify();
        }
    }
}

static uint64_t recurse(struct frame *parent, uint64_t depth)
{
    volatile struct frame f;
    f.parent = parent;
    f.depth = depth;
    for (int j = 0; j < FRAME_WORDS; j++)
        f.vals[j] = frame_word(depth, j);
    frames[depth] = (struct frame *)&f;
    if (depth + 1 < DEPTH)
        return recurse((struct frame *)&f, depth + 1) + f.vals[depth % FRAME_WORDS];
    run_loop();
    return f.vals[0];
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s MAPFILE\n", argv[0]);
        return 2;
    }
    map_path = argv[1];
    initial_pid = getpid();

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        die("sigaction");

    record_std_fds();
    set_fpu_state();
    fill_heap();
    setup_ro_page();
    setup_file_map();
    setup_shared();
    say("READY pid=%d", (int)initial_pid);
    return (int)recurse(NULL, 0);
}
