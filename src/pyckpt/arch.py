"""Facts of the machine pyckpt runs on and writes images for (x86-64 Linux).

The page size lives here; syscall numbers live in inject/nr.py.  A module that
needs either imports it from there instead of writing the number again.
"""

PAGE = 4096  # x86-64's base page: memory areas, the page store's alignment
