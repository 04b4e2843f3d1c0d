"""POSIX shared memory and semaphores in /dev/shm, shared by a parent and its child.

    python posix_shm.py named|unlinked
    python posix_shm.py sem spawn|forkserver
    python posix_shm.py pool spawn|forkserver

named / unlinked: a multiprocessing.shared_memory segment (a file in
/dev/shm, mapped MAP_SHARED) of 3 pages + 100 bytes holding a pattern; with
`unlinked` its name is removed after the fork, so both processes hold the
file only through their mappings.  The parent forks a child that has the
mapping too.  On SIGUSR1 each process checks the pattern and the mapping's
name in /proc/self/maps, prints `MAILBOX <who> <n>` (its own word of the
segment's last 16 bytes) and writes its mark into the other's word.

sem: a multiprocessing Semaphore (value 0) of the given start method
(glibc's sem_open maps it under a temporary name it then unlinks: the
mapping shows "/dev/shm/sem.XXXXXX (deleted)" while the semaphore lives on
as /dev/shm/sem.mp-...), and a worker Process of that method blocked in
sem.acquire().  On SIGUSR1 the parent releases the semaphore once and
checks its own view of it; the worker prints `GOT <n>` each time it gets it.

pool: a multiprocessing Pool(2) of the given start method (its task and result
queues are pipes guarded by POSIX semaphores); on SIGUSR1 it maps a function
over 50 items and checks the results.
"""

import os
import sys

import selfcheck

PAGE = 4096
SIZE = 3 * PAGE + 100


def worker(sem):
    n = 0
    while True:
        sem.acquire()
        n += 1
        print(f"GOT {n}", flush=True)


def maps_names():
    with open("/proc/self/maps") as f:
        return [line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6]


def semaphore_main(method):
    import multiprocessing

    ctx = multiprocessing.get_context(method)
    sem = ctx.Semaphore(0)
    proc = ctx.Process(target=worker, args=(sem,), daemon=True)
    selfcheck.listen()
    proc.start()

    def check():
        bad = []
        if not any(n.startswith("/dev/shm/sem.") for n in maps_names()):
            bad.append("no semaphore mapping")
        sem.release()
        return bad

    print(f"READY parent {os.getpid()} worker {proc.pid}", flush=True)
    selfcheck.serve(check)


def square(x):
    return x * x


def pool_main(method):
    import multiprocessing

    pool = multiprocessing.get_context(method).Pool(2)
    selfcheck.listen()
    assert pool.map(square, range(20)) == [x * x for x in range(20)]

    def check():
        got = pool.map(square, range(50), chunksize=3)  # its locks are POSIX semaphores
        return [] if got == [x * x for x in range(50)] else [f"pool.map gave {got}"]

    print(f"READY pool {os.getpid()}", flush=True)
    selfcheck.serve(check)


if __name__ == "__main__" and sys.argv[1] == "pool":
    pool_main(sys.argv[2])
elif __name__ == "__main__" and sys.argv[1] == "sem":
    semaphore_main(sys.argv[2])
elif __name__ == "__main__":
    mode = sys.argv[1]
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(create=True, size=SIZE)
    pattern = bytes((i * 11 + 5) % 253 for i in range(SIZE - 16))
    shm.buf[: len(pattern)] = pattern
    path = f"/dev/shm/{shm.name}"
    child = os.fork()
    me = "child" if child == 0 else "parent"
    if me == "child":
        import ctypes

        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG SIGKILL: ends with its parent
        if os.getppid() == 1:
            sys.exit(0)
    if mode == "unlinked" and me == "parent":
        shm.unlink()
    my_box, other_box = (SIZE - 16, SIZE - 8) if me == "parent" else (SIZE - 8, SIZE - 16)
    counter = 0

    def check():
        global counter
        bad = []
        if bytes(shm.buf[: len(pattern)]) != pattern:
            bad.append("content differs")
        want = path + (" (deleted)" if mode == "unlinked" else "")
        if want not in maps_names():
            bad.append(f"no mapping named {want!r}")
        if os.path.exists(path) == (mode == "unlinked"):
            bad.append(f"{path} {'exists' if mode == 'unlinked' else 'is gone'}")
        print(f"MAILBOX {me} {int.from_bytes(shm.buf[my_box:my_box + 8], 'little')}", flush=True)
        counter += 1
        shm.buf[other_box:other_box + 8] = (os.getpid() * 1000 + counter).to_bytes(8, "little")
        return bad

    print(f"READY {me} {os.getpid()} {path}", flush=True)
    selfcheck.serve(check)
