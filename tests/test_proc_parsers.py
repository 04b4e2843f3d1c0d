"""Unit tests of the /proc parsers on captured text (no process is touched)."""

import socket
import struct

from pyckpt import proc
from pyckpt.seize import refusal

MAPS = """\
55d0c5a4f000-55d0c5a50000 r--p 00000000 fe:00 1049107                    /tmp/a b/ctarget
55d0c6b1c000-55d0c6b3d000 rw-p 00000000 00:00 0                          [heap]
7f1f6c000000-7f1f6c021000 rw-s 00000000 00:01 2051                       /dev/zero (deleted)
7f1f6c200000-7f1f6c201000 r--p 00002000 fe:00 777                        /tmp/old.so (deleted)
7f1f6c300000-7f1f6c400000 ---p 00000000 00:00 0 
7ffd5a5e9000-7ffd5a60a000 rw-p 00000000 00:00 0                          [stack]
7ffd5a7c6000-7ffd5a7ca000 r--p 00000000 00:00 0                          [vvar]
7ffd5a7ca000-7ffd5a7cc000 r--p 00000000 00:00 0                          [vvar_vclock]
7ffd5a7cc000-7ffd5a7ce000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"""


def test_maps_columns_and_paths_with_spaces():
    m = proc.parse_maps(MAPS)
    assert len(m) == 10
    assert m[0].path == "/tmp/a b/ctarget" and m[0].perms == "r--p" and m[0].inode == 1049107
    assert m[0].start == 0x55D0C5A4F000 and m[0].size == 0x1000
    assert m[2].shared and m[2].path == "/dev/zero (deleted)"
    assert m[3].path.endswith(" (deleted)") and m[3].offset == 0x2000
    assert m[4].path == "" and m[4].perms == "---p"
    assert [x.path for x in m[6:9]] == ["[vvar]", "[vvar_vclock]", "[vdso]"]
    assert m[9].start == 0xFFFFFFFFFF600000



def test_maps_lines_met_again_give_the_same_entries(monkeypatch):
    """parse_maps keeps the entries of lines it met (_SEEN): the same text parses to the
    same entries, a changed line to a new one, and the memo is forgotten when full."""
    from pyckpt.proc import maps

    monkeypatch.setattr(maps, "_SEEN", {})
    first = proc.parse_maps(MAPS + "\n")
    again = proc.parse_maps(MAPS)
    assert again == first and all(a is b for a, b in zip(again, first))
    moved = proc.parse_maps(MAPS.replace("55d0c6b3d000 rw-p", "55d0c6b5e000 rw-p"))
    assert moved[1] is not first[1] and moved[1].end == 0x55D0C6B5E000
    assert [m.end for m in moved[2:]] == [m.end for m in first[2:]]
    monkeypatch.setattr(maps, "_SEEN_MAX", 5)
    proc.parse_maps(MAPS)  # the memo holds 11 lines: forgotten first
    assert len(maps._SEEN) == 10


SMAPS = """\
55d0c6b1c000-55d0c6b3d000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                   8 kB
VmFlags: rd wr mr mw me ac 
7ffd5a5e9000-7ffd5a60a000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
THPeligible:    0
VmFlags: rd wr mr mw me gd ac 
"""


def test_smaps_vmflags_by_start():
    f = proc.parse_smaps_flags(SMAPS)
    assert f[0x55D0C6B1C000] == ["rd", "wr", "mr", "mw", "me", "ac"]
    assert "gd" in f[0x7FFD5A5E9000]


# comm may hold spaces and parentheses: the parser splits on the last ')'.
STAT = ("4242 (we) ird (x) R 17 4242 4242 0 -1 4194560 150 0 0 0 3 1 0 0 20 0 1 0 1234 "
        "10485760 300 18446744073709551615 94000000000000 94000000004096 140720000000000 0 0 0 "
        "0 4096 0 0 0 0 17 1 0 0 0 0 0 94000000008192 94000000008704 94000010000000 "
        "140720000001000 140720000001100 140720000001100 140720000002000 0")


def test_stat_with_tricky_comm_and_mm_fields():
    s = proc.parse_stat(STAT)
    assert s.pid == 4242 and s.comm == "we) ird (x" and s.state == "R"
    assert (s.ppid, s.pgrp, s.session) == (17, 4242, 4242)
    assert s.num_threads == 1 and s.processor == 1
    assert s.start_code == 94000000000000 and s.end_code == 94000000004096
    assert s.start_stack == 140720000000000
    assert (s.start_data, s.end_data, s.start_brk) == (94000000008192, 94000000008704, 94000010000000)
    assert (s.arg_start, s.arg_end, s.env_start, s.env_end) == (
        140720000001000, 140720000001100, 140720000001100, 140720000002000)
    assert not s.is_kernel_thread


KTHREAD_STAT = ("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 "
                "18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0")
STATUS = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTracerPid:\t0\nThreads:\t1\n"


def test_refusals_from_captured_proc_text():
    k = proc.parse_stat(KTHREAD_STAT)
    assert k.is_kernel_thread
    assert "kernel thread" in str(refusal(k, proc.parse_status(STATUS), own_pid=1))
    user = proc.parse_stat(STAT)
    status = proc.parse_status(STATUS)
    assert refusal(user, status, own_pid=1) is None
    assert "pyckpt itself" in str(refusal(user, status, own_pid=4242))
    traced = dict(status, TracerPid="77")
    assert "traced by process 77" in str(refusal(user, traced, own_pid=1))
    assert refusal(user, dict(status, Threads="5"), own_pid=1) is None  # threads are dumped
    zombie = proc.parse_stat(STAT.replace(") R ", ") Z "))
    assert "zombie" in str(refusal(zombie, status, own_pid=1))


def test_status_fields():
    st = proc.parse_status(STATUS)
    assert st["Umask"] == "0022" and st["Threads"] == "1" and st["State"] == "S (sleeping)"


FDINFO = "pos:\t4096\nflags:\t02102002\nmnt_id:\t31\nino:\t1234\nlock:\t1: POSIX  ADVISORY  WRITE 99 fe:00:1234 0 EOF\n"


def test_fdinfo_octal_flags_and_extras():
    f = proc.parse_fdinfo(FDINFO)
    assert f.pos == 4096 and f.flags == 0o2102002 and f.mnt_id == 31 and f.ino == 1234
    assert f.flags & 0o2000000  # O_CLOEXEC
    assert f.flags & 0o2000  # O_APPEND
    assert "lock" in f.extra


def test_auxv_stops_at_at_null():
    data = struct.pack("<6Q", 33, 0x7FFD0000, 6, 4096, 0, 0) + b"\xff" * 16
    assert proc.parse_auxv(data) == [(33, 0x7FFD0000), (6, 4096), (0, 0)]


LIMITS = """\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max data size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max core file size        0                    unlimited            bytes     
Max resident set          unlimited            unlimited            bytes     
Max processes             96365                96365                processes 
Max open files            1024                 524288               files     
Max locked memory         8388608              8388608              bytes     
Max address space         unlimited            unlimited            bytes     
Max file locks            unlimited            unlimited            locks     
Max pending signals       96365                96365                signals   
Max msgqueue size         819200               819200               bytes     
Max nice priority         0                    0                    
Max realtime priority     0                    0                    
Max realtime timeout      unlimited            unlimited            us        
"""


def test_limits_in_rlimit_order():
    lim = proc.parse_limits(LIMITS)
    assert len(lim) == 16
    assert lim[0] == (-1, -1)  # RLIMIT_CPU
    assert lim[3] == (8388608, -1)  # RLIMIT_STACK
    assert lim[7] == (1024, 524288)  # RLIMIT_NOFILE
    assert lim[13] == (0, 0) and lim[15] == (-1, -1)  # NICE, RTTIME


TIMERS = """\
ID: 0
signal: 12/0000000000001111
notify: signal/pid.4242
ClockID: 1
ID: 2
signal: 14/0000000000000000
notify: signal/tid.4243
ClockID: 0
ID: 3
signal: 0/0000000000000000
notify: none/pid.4242
ClockID: 7
"""


def test_posix_timers_text():
    from pyckpt.proc import parse_timers

    t = parse_timers(TIMERS)
    assert [x["id"] for x in t] == [0, 2, 3]
    assert t[0] == {"id": 0, "signo": 12, "value": 0x1111, "notify": 0, "tid": 0, "clock": 1}
    assert t[1]["notify"] == 4 and t[1]["tid"] == 4243  # SIGEV_SIGNAL | SIGEV_THREAD_ID
    assert t[2]["notify"] == 1 and t[2]["clock"] == 7  # SIGEV_NONE


def test_stat_terminal_and_start_time():
    s = proc.parse_stat(STAT)
    assert (s.tty_nr, s.tpgid, s.start_time) == (0, -1, 1234)


# A mount point with a space (escaped \040) and a bind mount of a subdirectory.
MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
95 27 254:0 /srv/data /mnt/my\\040data rw,relatime shared:1 master:3 - ext4 /dev/vda rw
"""


def test_mountinfo_ids_devices_and_escaped_paths():
    m = proc.parse_mountinfo(MOUNTINFO)
    assert [(x.mnt_id, x.parent_id, x.major, x.minor) for x in m] == [
        (22, 27, 0, 21), (27, 1, 254, 0), (95, 27, 254, 0)]
    assert m[2].mount_point == "/mnt/my data" and m[2].root == "/srv/data"
    assert [x.fstype for x in m] == ["proc", "ext4", "ext4"]


# A listener, an established connection with 5 bytes queued to send and 7 to read, and
# a socket without an inode (a TIME_WAIT one: not anyone's).
NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2053948 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000005:00000007 00:00000000 00000000     0        0 2053951 1 0 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:D432 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0
"""
# ::ffff:127.0.0.1 port 8080, and ::1 port 22 connected to ::1 port 40000
NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:0016 00000000000000000000000001000000:9C40 01 00000000:00000000 00:00000000 00000000     0        0 78 1 0 20 4 30 10 -1
"""


def test_net_tcp_states_addresses_queues_and_inodes():
    from pyckpt.proc.net import TCP_ESTABLISHED, TCP_LISTEN, parse_listening

    s = proc.parse_net_sockets(NET_TCP)
    assert [x.inode for x in s] == [2053948, 2053951]  # the one without an inode is left out
    assert s[0].state == TCP_LISTEN and s[0].local == ("127.0.0.1", 8080)
    assert s[1].state == TCP_ESTABLISHED and s[1].remote == ("127.0.0.1", 0xD431)
    assert (s[1].tx_queue, s[1].rx_queue) == (5, 7)
    s6 = proc.parse_net_sockets(NET_TCP6)
    assert s6[0].local == ("127.0.0.1", 8080)  # IPv4-mapped: named as IPv4
    assert s6[1].local == ("::1", 22) and s6[1].remote == ("::1", 40000)
    assert parse_listening(NET_TCP, socket.AF_INET) == {2053948: socket.AF_INET}


NET_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 0100007F:A5B1 00000000:0000 07 00000000:00000300 00:00000000 00000000     0        0 555 2 0 0
"""

IGMP = """\
Idx	Device    : Count Querier	Group    Users Timer	Reporter
1	lo        :     2      V3
				FB0000E0     1 0:00000000		0
				010000E0     1 0:00000000		0
4	eth0      :     1      V3
				010000E0     1 0:00000000		0
"""

IGMP6 = """\
1    lo              ff020000000000000000000000000001     1 0000000C 0
2    eth0            ff0200000000000000000001ff000001     1 00000004 0
"""


def test_net_udp_queues_and_multicast_groups():
    from pyckpt.proc.net import parse_igmp, parse_igmp6

    (u,) = proc.parse_net_sockets(NET_UDP)
    assert (u.inode, u.rx_queue, u.tx_queue, u.local) == (555, 0x300, 0, ("127.0.0.1", 0xA5B1))
    assert parse_igmp(IGMP) == [("224.0.0.251", 1, "lo"), ("224.0.0.1", 1, "lo"), ("224.0.0.1", 4, "eth0")]
    assert parse_igmp6(IGMP6) == [("ff02::1", 1, "lo"), ("ff02::1:ff00:1", 2, "eth0")]


SYSVIPC_SEM = """\
       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime
        -1          0   600          3     0     0     0     0          0 1700000000
"""
SYSVIPC_SHM = """\
       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
      1234      32769  1600                  4096   100   101      2  1000  1000  1000  1000          0          0 1700000000                  4096                     0
"""


def test_sysvipc_tables():
    from pyckpt.proc.misc import parse_shm_table

    assert proc.parse_sysvipc(SYSVIPC_SEM) == [[0xFFFFFFFF, 0, 0o600, 3, 0, 0, 0, 0, 0, 1700000000]]
    (e,) = parse_shm_table(SYSVIPC_SHM)
    assert (e.key, e.shmid, e.mode, e.size, e.cpid, e.nattch, e.uid) == (1234, 32769, 0o1600, 4096, 100, 2, 1000)


def test_small_files():
    from pyckpt.proc.misc import parse_children, parse_personality

    assert parse_children("812 813 \n") == [812, 813] and parse_children("") == []
    assert parse_personality("00400000\n") == 0x400000


def test_whole_files_read_past_one_read(tmp_path):
    """proc._read reads until the end: a file longer than one 64 KiB read, and a /proc
    file (undecodable bytes kept as surrogates when asked)."""
    from pyckpt.proc._read import read_bytes, read_text

    big = bytes(range(256)) * 1000 + b"end"
    (tmp_path / "big").write_bytes(big)
    assert read_bytes(str(tmp_path / "big")) == big
    (tmp_path / "odd").write_bytes(b"ok \xff\n")
    assert read_text(str(tmp_path / "odd"), "surrogateescape") == "ok \udcff\n"
    with open("/proc/self/status") as f:
        assert read_text("/proc/self/status").split("\n")[0] == f.read().split("\n")[0]


def test_proc_locks_not_strict_skips_a_strange_line():
    from pyckpt.proc.locks import parse_locks

    text = "1: LEASE  ACTIVE    READ 24026 fe:00:2146482 0 EOF\n2: SOMETHING NEW\n"
    (line,) = parse_locks(text, strict=False)
    assert (line.kind, line.ino, line.waiter) == ("LEASE", 2146482, False)
    try:
        parse_locks(text)
    except ValueError:
        pass
    else:
        raise AssertionError("a strange line must raise when strict")


def test_tables_read_once_per_dump_and_fresh_for_the_next(tmp_path, monkeypatch):
    """proc.Tables (one per dump) reads a table once however often it is asked for;
    a new Tables (the next dump) reads it again and sees what changed."""
    from pyckpt.proc import tables as tables_mod

    texts = {"mountinfo": MOUNTINFO}
    reads = []

    def fake_mountinfo(pid):
        reads.append(pid)
        return proc.parse_mountinfo(texts["mountinfo"])

    monkeypatch.setattr(tables_mod, "read_mountinfo", fake_mountinfo)
    t = proc.Tables()
    assert len(t.mountinfo(7)) == 3 and len(t.mountinfo(7)) == 3 and reads == [7]
    t.mountinfo(8)
    assert reads == [7, 8]
    texts["mountinfo"] = MOUNTINFO.splitlines(keepends=True)[0]
    assert len(t.mountinfo(7)) == 3  # the same dump: its tables do not change under it
    assert len(proc.Tables().mountinfo(7)) == 1  # the next dump reads afresh
    assert t.memo("k", lambda: [1]) is t.memo("k", lambda: [2])
