"""A process (and with `tree`, its child) attached to one SysV shared memory segment.

    python sysv_shm.py RMID TREE

The segment (key 0x5e5eNNNN, 4 pages + 100 bytes, mode 0640) holds a
pattern; the parent attaches it three times: A read-write with its last page
made read-only (mprotect), B read-only, C read-write with its second page
unmapped.  With RMID=1 it is marked for removal (IPC_RMID) after the
attaches.  With TREE=1 the parent forks a child after attaching: the child
inherits the three attachments.

On SIGUSR1 each process checks itself (selfcheck.serve): the segment has the
same id, the key (0 when marked for removal), size, mode, owner and removal
state it had, as many attachments as before (shm_nattch), the pattern seen
through every attachment, every attachment at its address with its
protections and hole (/proc/self/maps), and then it prints the mailbox word
(`MAILBOX <pid> <n>`) and writes its own counter into the mailbox of the
other (parent -> child's box, child -> parent's box), so that a test sees a
write in one process reach the other.
"""

import ctypes
import os
import sys

import selfcheck

libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


class IpcPerm(ctypes.Structure):
    _fields_ = [("key", ctypes.c_int), ("uid", ctypes.c_uint), ("gid", ctypes.c_uint),
                ("cuid", ctypes.c_uint), ("cgid", ctypes.c_uint), ("mode", ctypes.c_uint),
                ("seq", ctypes.c_ushort), ("pad2", ctypes.c_ushort),
                ("unused1", ctypes.c_ulong), ("unused2", ctypes.c_ulong)]


class ShmidDs(ctypes.Structure):
    _fields_ = [("perm", IpcPerm), ("segsz", ctypes.c_size_t), ("atime", ctypes.c_long),
                ("dtime", ctypes.c_long), ("ctime", ctypes.c_long), ("cpid", ctypes.c_int),
                ("lpid", ctypes.c_int), ("nattch", ctypes.c_ulong), ("unused4", ctypes.c_ulong),
                ("unused5", ctypes.c_ulong)]


libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ShmidDs)]

PAGE = 4096
SIZE = 4 * PAGE + 100
BOX_PARENT, BOX_CHILD = SIZE - 16, SIZE - 8  # two mailbox words at the end
IPC_CREAT, IPC_RMID, IPC_STAT, SHM_RDONLY, SHM_DEST = 0o1000, 0, 2, 0o10000, 0o1000

rmid, tree = sys.argv[1] == "1", sys.argv[2] == "1"
key = 0x5E5E0000 | (os.getpid() & 0xFFFF)
shmid = libc.shmget(key, SIZE, IPC_CREAT | 0o640)
assert shmid >= 0, os.strerror(ctypes.get_errno())


def attach(flags):
    addr = libc.shmat(shmid, None, flags)
    assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    return addr


A, B, C = attach(0), attach(SHM_RDONLY), attach(0)
pattern = bytes((i * 7 + 3) % 251 for i in range(SIZE - 16))
ctypes.memmove(A, pattern, len(pattern))
assert libc.mprotect(A + 4 * PAGE, PAGE, 1) == 0  # A's last page read-only
assert libc.munmap(C + PAGE, PAGE) == 0  # a hole in C
if rmid:
    assert libc.shmctl(shmid, IPC_RMID, None) == 0
me = "parent"
selfcheck.listen()  # before the fork: the child has the SIGUSR1 handler from its start
if tree:
    child = os.fork()
    if child == 0:
        me = "child"
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG SIGKILL: ends with its parent
        if os.getppid() == 1:
            sys.exit(0)
attaches = 2 * 5 if tree else 5  # shm_nattch counts VMAs: the split A and C count twice
my_box, other_box = (BOX_PARENT, BOX_CHILD) if me == "parent" else (BOX_CHILD, BOX_PARENT)
counter = 0


def maps_lines():
    out = {}
    with open("/proc/self/maps") as f:
        for line in f:
            if "/SYSV" in line:
                rng, perms, off = line.split()[:3]
                start, end = (int(x, 16) for x in rng.split("-"))
                out[start] = (end, perms, int(off, 16), line.split(None, 5)[5].strip())
    return out


def check():
    global counter
    bad = []
    ds = ShmidDs()
    if libc.shmctl(shmid, IPC_STAT, ctypes.byref(ds)) != 0:
        return [f"IPC_STAT of id {shmid}: {os.strerror(ctypes.get_errno())}"]
    want_key = 0 if rmid else key
    if ds.perm.key & 0xFFFFFFFF != want_key:
        bad.append(f"key {ds.perm.key & 0xFFFFFFFF:#x}, want {want_key:#x}")
    if ds.segsz != SIZE:
        bad.append(f"size {ds.segsz}")
    if ds.perm.mode & 0o777 != 0o640 or bool(ds.perm.mode & SHM_DEST) != rmid:
        bad.append(f"mode {ds.perm.mode:o}")
    if (ds.perm.uid, ds.perm.gid) != (os.geteuid(), os.getegid()):
        bad.append(f"owner {ds.perm.uid}:{ds.perm.gid}")
    if ds.nattch != attaches:
        bad.append(f"nattch {ds.nattch}, want {attaches}")
    for name, addr, length in (("A", A, SIZE - 16), ("B", B, SIZE - 16), ("C", C, PAGE)):
        if ctypes.string_at(addr, length) != pattern[:length]:
            bad.append(f"content through {name} differs")
    if ctypes.string_at(C + 2 * PAGE, SIZE - 16 - 2 * PAGE) != pattern[2 * PAGE:]:
        bad.append("content through C after its hole differs")
    name = f"/SYSV{key:08x} (deleted)"
    want = {A: (A + 4 * PAGE, "rw-s", 0), A + 4 * PAGE: (A + 5 * PAGE, "r--s", 4 * PAGE),
            B: (B + 5 * PAGE, "r--s", 0), C: (C + PAGE, "rw-s", 0), C + 2 * PAGE: (C + 5 * PAGE, "rw-s", 2 * PAGE)}
    got = maps_lines()
    for start, (end, perms, off) in want.items():
        if got.get(start, (0, 0, 0, ""))[:3] != (end, perms, off) or got[start][3] != name:
            bad.append(f"mapping at {start:#x} is {got.get(start)}, want {(end, perms, off, name)}")
    if len(got) != len(want):
        bad.append(f"{len(got)} SysV mappings, want {len(want)}")
    box = ctypes.c_uint64.from_address(C + my_box).value
    print(f"MAILBOX {me} {box}", flush=True)
    counter += 1
    ctypes.c_uint64.from_address(C + other_box).value = os.getpid() * 1000 + counter
    return bad


if me == "parent":  # (one line for both: two processes writing at once could mix their lines)
    print(f"READY parent {os.getpid()} shmid={shmid} key={key:#x}" + (f" child={child}" if tree else ""),
          flush=True)
selfcheck.serve(check)
