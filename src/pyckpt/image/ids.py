"""The one table of record type ids: every record class of the image format, by id.

An id is the record's type in records.img: it is never reused, never changed
(docs/image-format.md).  A new record class takes the next free id here and
names itself; `@record(id, scope=...)` refuses an id that is not listed here for
that class, so two kinds written at once cannot take the same id unnoticed.
Ranges are kept together by kind; gaps are free.  An id whose record is gone
moves to RETIRED, so that no new record takes it.
"""

RECORD_IDS: dict[int, str] = {
    1: "kinds.task.TaskRecord",
    2: "kinds.creds.CredsRecord",
    3: "kinds.task.ProcessRecord",
    4: "kinds.task.ZombieRecord",
    10: "kinds.memory.VmaRecord",
    11: "kinds.memory.VdsoRecord",
    12: "kinds.shmem.ShmemRecord",
    13: "image.chain.ParentRecord",
    20: "kinds.cpu.CpuRecord",
    30: "kinds.signals.SignalsRecord",
    31: "kinds.signals.PendingSignalsRecord",
    40: "kinds.thread.ThreadRecord",
    45: "kinds.itimers.ItimersRecord",
    46: "kinds.itimers.PosixTimersRecord",
    50: "kinds.mm.MmRecord",
    60: "kinds.regfile.FileRecord",
    61: "kinds.files.FdRecord",
    62: "kinds.files.ExternalFileRecord",
    70: "kinds.pipes.PipeRecord",
    71: "kinds.pipes.PipeEndRecord",
    72: "kinds.pipes.FifoRecord",
    80: "kinds.eventfds.EventfdRecord",
    81: "kinds.eventfds.SignalfdRecord",
    82: "kinds.eventfds.TimerfdRecord",
    83: "kinds.epoll.EpollRecord",
    84: "kinds.epoll.EpollItemsRecord",
    90: "kinds.locks.FileLockRecord",
    95: "kinds.deleted.DeletedContentRecord",
    96: "kinds.deleted.DeletedFileRecord",
    97: "kinds.memfd.MemfdRecord",
    98: "kinds.memfd.MemfdFileRecord",
    99: "kinds.inotify.InotifyRecord",
    100: "kinds.unix.UnixSocketRecord",
    101: "kinds.tcp.TcpListenerRecord",
    102: "kinds.tcpconn.TcpConnectionRecord",
    103: "kinds.tcpconn.TcpOutsideRecord",
    110: "kinds.unixname.UnixNamedRecord",
    120: "kinds.sysvipc.SysvShmRecord",
    121: "kinds.sysvipc.SysvSemRecord",
    122: "kinds.sysvipc.SysvMsgRecord",
    130: "kinds.tty.PtyMasterRecord",
    131: "kinds.tty.PtySlaveRecord",
    132: "kinds.tty.CttyRecord",
    140: "kinds.udp.UdpSocketRecord",
    150: "kinds.pidfd.PidfdRecord",
}

RETIRED: dict[int, str] = {}  # id -> the record it was, and when it went
