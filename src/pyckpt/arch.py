"""Facts of the machine pyckpt runs on and writes images for (x86-64 Linux), and
its C library.

The page size and the one handle on the C library live here; syscall numbers
live in inject/nr.py.  A module that needs one imports it instead of writing the
number again or opening libc itself: on one handle, a prototype set in one
module would change another's calls, so every prototype is declared below.
"""

import ctypes

PAGE = 4096  # x86-64's base page: memory areas, the page store's alignment

libc = ctypes.CDLL(None, use_errno=True)
_c = ctypes
libc.syscall.restype = _c.c_long
libc.tee.argtypes = [_c.c_int, _c.c_int, _c.c_size_t, _c.c_uint]
libc.tee.restype = _c.c_ssize_t
libc.getsockopt.argtypes = [_c.c_int, _c.c_int, _c.c_int, _c.c_void_p, _c.c_void_p]
libc.mmap.argtypes = [_c.c_void_p, _c.c_size_t, _c.c_int, _c.c_int, _c.c_int, _c.c_long]
libc.mmap.restype = _c.c_void_p
libc.munmap.argtypes = [_c.c_void_p, _c.c_size_t]
libc.name_to_handle_at.argtypes = [_c.c_int, _c.c_char_p, _c.c_void_p, _c.c_void_p, _c.c_int]
libc.open_by_handle_at.argtypes = [_c.c_int, _c.c_void_p, _c.c_int]
libc.inotify_add_watch.argtypes = [_c.c_int, _c.c_char_p, _c.c_uint32]
libc.setns.argtypes = [_c.c_int, _c.c_int]
libc.shmget.argtypes = [_c.c_int, _c.c_size_t, _c.c_int]
libc.shmat.argtypes = [_c.c_int, _c.c_void_p, _c.c_int]
libc.shmat.restype = _c.c_void_p
libc.shmdt.argtypes = [_c.c_void_p]
libc.shmctl.argtypes = [_c.c_int, _c.c_int, _c.c_void_p]  # struct shmid_ds *: byref() or None
libc.semget.argtypes = [_c.c_int, _c.c_int, _c.c_int]
libc.msgget.argtypes = [_c.c_int, _c.c_int]
libc.msgrcv.argtypes = [_c.c_int, _c.c_void_p, _c.c_size_t, _c.c_long, _c.c_int]
libc.msgrcv.restype = _c.c_ssize_t
libc.msgsnd.argtypes = [_c.c_int, _c.c_void_p, _c.c_size_t, _c.c_int]
