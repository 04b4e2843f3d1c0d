"""cffi build script for pyckpt's native helper (run by `pip install .`)."""

from pathlib import Path

from cffi import FFI

ffibuilder = FFI()

ffibuilder.cdef(
    """
    long ck_ptrace(long request, int pid, unsigned long addr, unsigned long data);
    int ck_wait(int pid, int *status);
    long ck_getregset(int pid, int note, void *buf, size_t len);
    long ck_setregset(int pid, int note, void *buf, size_t len);
    int ck_inject(int pid, const void *tmpl, unsigned long site, long nr,
                  const long *args, long *result, int *status);
    int ck_park(int pid, const void *own, unsigned long own_mask, int *status);
    int ck_inject_held(int pid, const void *own, unsigned long own_mask, unsigned long site,
                       long nr, const long *args, long *result, int *status);
    int ck_tramp_call(int pid, const void *tmpl, unsigned long gadget, unsigned long sp, long nr,
                      const long *args, long *result, int *status);
    int ck_tramp_call_many(int n, const int *pids, const void *const *tmpls, const unsigned long *gadgets,
                           const unsigned long *sps, const long *nrs, const long *args,
                           long *results, int *statuses, int *rcs);
    unsigned ck_xsave_size(unsigned long mask);
    long ck_clone_stopped(int pid, unsigned long flags);
    long ck_clone_exec(int pid, const int *keep, int nkeep);
    long ck_map_populated(int fd, size_t len);
    int ck_unmap(unsigned long addr, size_t len);
    long ck_release_guard(int rd, int wr, const int *pidfds, int n, void *area, size_t size);
    int ck_getcpu(void);
    long ck_process_mrelease(int pidfd);
    long ck_smaps_flags(const char *path, char *out, long cap);
    long ck_uffd_fill(int uffd, const unsigned long *ranges, long nranges, const char *src,
                      const unsigned long *runs, long nruns);
    long ck_uffd_fill_read(int uffd, const unsigned long *ranges, long nranges, int fd,
                           const unsigned long *runs, long nruns, char *buf, unsigned long buflen);
    long ck_uffd_register(int uffd, const unsigned long *ranges, long nranges);
    long ck_uffd_copy_runs(int uffd, const char *src, const unsigned long *runs, long nruns);
    long ck_uffd_unregister(int uffd, const unsigned long *ranges, long nranges);
    void ck_init_loop(void);
    long ck_pagemap_runs(int pagemap_fd, unsigned long start, unsigned long npages,
                         int mode, unsigned long *out, long max_runs, unsigned long *stored);
    long ck_vm_read(int pid, unsigned long addr, void *buf, size_t len);
    long ck_read_pieces(int pid, const unsigned long *segs, long nsegs, char *buf,
                        unsigned long piece, unsigned long hash_fn, unsigned char *zero,
                        unsigned long long *digests, long max_pieces);
    long ck_same_pages(const void *a, const void *b, size_t len, size_t page, unsigned char *flags);
    int ck_sync_range(int fd, long offset, long len, unsigned flags);
    int ck_fallocate(int fd, int mode, long offset, long len);
    long ck_vm_read_to_file(int pid, unsigned long addr, size_t len, int fd,
                            void *buf, size_t buflen);
    long ck_lazy_register(int uffd, const unsigned long *ranges, long n);
    long ck_lazy_start(int uffd, int pages_fd, int pidfd, int pid, const unsigned long *runs,
                       long nruns, const unsigned long *stored, long nstored,
                       const unsigned long *digests, long ndigests, unsigned long piece,
                       unsigned long hash_fn, long pages_size, int report_fd, int prefetch,
                       unsigned long window, unsigned long chunk, int *status);
    long ck_lazy_guard(int status_fd);
    unsigned long ck_lazy_hash_fn(const char *path);
    unsigned long long ck_lazy_hash(unsigned long fn, const void *buf, size_t len);
    """
)

ffibuilder.set_source(
    "pyckpt._native._ck",
    (Path(__file__).parent / "ck.c").read_text(),
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
