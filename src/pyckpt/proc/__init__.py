"""Read-only parsers of /proc text.

Each `parse_*` function takes the text (or bytes) of one /proc file and
returns plain data, so it can be tested on captured text; each `read_*`
function reads the live file for a PID.  Nothing here changes a process.
"""

from .maps import MapEntry, SmapsFlags, own_vdso_blocks, parse_maps, parse_smaps_flags, read_maps, read_smaps_flags
from .status import (
    ProcStat,
    parse_auxv,
    parse_stat,
    parse_limits,
    parse_status,
    read_auxv,
    read_limits,
    read_stat,
    read_status,
)
from .fdinfo import FdInfo, parse_fdinfo, read_fdinfo, read_fdinfo_text
from .mountinfo import Mount, parse_mountinfo, read_mountinfo
from .net import NetSocket, parse_net_sockets, read_net_sockets
from .misc import (
    in_initial_user_ns,
    parse_timers,
    read_timers,
    read_personality,
    read_comm,
    read_children,
    read_sys,
    read_sys_int,
    write_sys,
    read_boot_id,
    parse_sysvipc,
    read_sysvipc_text,
)
from .tables import Tables

__all__ = [
    "MapEntry",
    "parse_maps",
    "parse_smaps_flags",
    "SmapsFlags",
    "read_maps",
    "own_vdso_blocks",
    "read_smaps_flags",
    "ProcStat",
    "parse_stat",
    "parse_status",
    "parse_auxv",
    "read_stat",
    "read_status",
    "read_auxv",
    "parse_limits",
    "read_limits",
    "FdInfo",
    "parse_fdinfo",
    "read_fdinfo",
    "read_fdinfo_text",
    "Mount",
    "parse_mountinfo",
    "read_mountinfo",
    "NetSocket",
    "parse_net_sockets",
    "read_net_sockets",
    "parse_timers",
    "read_timers",
    "read_personality",
    "read_comm",
    "read_children",
    "read_sys",
    "read_sys_int",
    "write_sys",
    "read_boot_id",
    "in_initial_user_ns",
    "parse_sysvipc",
    "read_sysvipc_text",
    "Tables",
]
