"""A pty.fork() pair: the parent holds the master, the child runs on the slave.

The parent turns echo off and sets a distinct interrupt character (so that
what it reads is only the child's answer), a window size of 33x101, and
packet mode on the master (every read then starts with a TIOCPKT_DATA byte,
0); run as root, it gives /dev/pts/N to user and group 65534, mode 0600.  The child leads its own session with the slave as its controlling
terminal (pty.fork) and answers each line it reads with what it sees of its
terminal: `ECHO <LINE> tty=<ttyname> ws=<rows>x<cols> echo=<0|1> intr=<n>
ctty=<opened /dev/tty> fg=<its group is the foreground one> sid=<leads its session>`.

The parent prints `READY parent=P child=C tty=/dev/pts/N`; on SIGUSR1 it
writes `ping K` to the master, reads the child's answer and prints
`GOT <answer>`, then `CHECK ok counter=K` when its own view of the pair (packet
byte, termios, window size, read from the master) is as it set it, else
`CHECK FAIL <why>`.
"""

import fcntl
import os
import pty
import signal
import struct
import sys
import termios
import time

TIOCPKT = 0x5420
INTR = 2  # ^B
ROWS, COLS = 33, 101
OWNER = 65534  # nobody

pid, master = pty.fork()
if pid == 0:  # the child, on the slave (stdin/stdout/stderr)
    while True:
        line = sys.stdin.readline()
        if not line:
            os._exit(3)
        try:
            fd = os.open("/dev/tty", os.O_RDWR)
            os.close(fd)
            ctty = 1
        except OSError:
            ctty = 0
        attrs = termios.tcgetattr(0)
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))[:2]
        intr = attrs[6][termios.VINTR]
        intr = intr[0] if isinstance(intr, bytes) else intr
        sys.stdout.write(f"ECHO {line.strip().upper()} tty={os.ttyname(0)} ws={rows}x{cols} "
                         f"echo={int(bool(attrs[3] & termios.ECHO))} intr={intr} ctty={ctty} "
                         f"fg={int(os.tcgetpgrp(0) == os.getpgrp())} sid={int(os.getsid(0) == os.getpid())}\n")
        sys.stdout.flush()

attrs = termios.tcgetattr(master)
attrs[3] &= ~termios.ECHO
attrs[6][termios.VINTR] = bytes([INTR])
termios.tcsetattr(master, termios.TCSANOW, attrs)
fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
fcntl.ioctl(master, TIOCPKT, struct.pack("i", 1))
asked = []
signal.signal(signal.SIGUSR1, lambda *a: asked.append(1))
TIOCGPTN = 0x80045430
index = struct.unpack("i", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
if os.geteuid() == 0:  # the terminal's node as a login would leave it: its user's, mode 0600
    os.chown(f"/dev/pts/{index}", OWNER, OWNER)
    os.chmod(f"/dev/pts/{index}", 0o600)
print(f"READY parent={os.getpid()} child={pid} tty=/dev/pts/{index}", flush=True)
counter = 0
while True:
    time.sleep(0.02)
    if not asked:
        continue
    asked.clear()
    counter += 1
    os.write(master, f"ping {counter}\n".encode())
    got, why = b"", []
    deadline = time.monotonic() + 10
    while b"\n" not in got and time.monotonic() < deadline:
        chunk = os.read(master, 4096)
        if chunk[:1] != b"\0":
            why.append(f"packet byte {chunk[:1]!r}")
        got += chunk[1:]
    answer = got.decode(errors="replace").strip()
    print(f"GOT {answer}", flush=True)
    a = termios.tcgetattr(master)
    if a[3] & termios.ECHO:
        why.append("echo on")
    intr = a[6][termios.VINTR]
    if (intr[0] if isinstance(intr, bytes) else intr) != INTR:
        why.append(f"intr {intr!r}")
    ws = struct.unpack("HHHH", fcntl.ioctl(master, termios.TIOCGWINSZ, b"\0" * 8))[:2]
    if ws != (ROWS, COLS):
        why.append(f"winsize {ws}")
    if not answer.startswith(f"ECHO PING {counter} "):
        why.append(f"answer {answer!r}")
    print(f"CHECK ok counter={counter}" if not why else f"CHECK FAIL {'; '.join(why)}", flush=True)
