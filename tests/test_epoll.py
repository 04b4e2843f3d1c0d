"""epoll sets: items (events, data, one-shot state, numbers closed since), nested sets.

The target (targets/ev_epoll.py) compares its sets' items with what
/proc/self/fdinfo showed before the dump and drives each item after restore:
a write to the watched file must make epoll_wait report the item's data.
"""

import os

import pytest
from conftest import TARGETS, check, dump_kill_restore

import pyckpt
from pyckpt.errors import RestoreError, UnsupportedError
from pyckpt.kinds.epoll import EpollItem, EpollRecord, _fill_order
from pyckpt.proc.anon_fdinfo import parse_epoll_items

EPOLL = """\
pos:\t0
flags:\t02000002
mnt_id:\t17
ino:\t1038
tfd:        5 events:       19 data:                5  pos:0 ino:40e sdev:10
tfd:        3 events: 40000019 data: deadbeef12345678  pos:0 ino:40e sdev:10
tfd:        5 events:       1c data:     7f4e00000005  pos:0 ino:40e sdev:10
tfd:        9 events: 10000019 data:               2a  pos:0 ino:1b693 sdev:f
tfd:       12 events: 40000000 data:                0  pos:0 ino:40e sdev:10
"""


def test_epoll_fdinfo_items_and_their_kcmp_index():
    items = parse_epoll_items(EPOLL)
    assert [(i.tfd, i.events, i.data, i.toff) for i in items] == [
        (5, 0x19, 5, 0),
        (3, 0x40000019, 0xDEADBEEF12345678, 0),
        (5, 0x1C, 0x7F4E00000005, 1),  # the second item under number 5
        (9, 0x10000019, 0x2A, 0),
        (12, 0x40000000, 0, 0),
    ]
    assert parse_epoll_items("pos:\t0\nflags:\t02\n") == []
    with pytest.raises(ValueError, match="bad item line"):
        parse_epoll_items("tfd: x events: 1 data: 2\n")


def test_watched_sets_are_filled_first():
    epolls = {1: EpollRecord(1, 2), 2: EpollRecord(2, 2), 3: EpollRecord(3, 2)}
    items = {1: [EpollItem(4, 2, 1, 0)], 2: [EpollItem(5, 3, 1, 0), EpollItem(6, 9, 1, 0)]}
    assert _fill_order(epolls, items) == [3, 2, 1]
    with pytest.raises(RestoreError, match="loop"):
        _fill_order(epolls, {1: [EpollItem(4, 2, 1, 0)], 2: [EpollItem(5, 1, 1, 0)]})


def _start(spawn, python_exe, *args, **kw):
    t = spawn([python_exe, str(TARGETS / "ev_epoll.py"), *args], name="ev_epoll", **kw)
    t.wait_for("^READY")
    return t


def test_epoll_items_survive_two_rounds(spawn, python_exe, tmp_path):
    """Eventfd items (ET, one-shot armed and fired, exclusive), an item whose number
    now holds another file, one whose number was closed, nested sets."""
    t = _start(spawn, python_exe)
    for round_ in range(2):
        dump_kill_restore(spawn, t, tmp_path / f"img{round_}")
    check(t)


def test_epoll_item_on_a_pipe(spawn, python_exe, tmp_path):
    """The same sets plus a pipe's read end (needs the pipes kind)."""
    t = _start(spawn, python_exe, "pipe")
    dump_kill_restore(spawn, t, tmp_path / "img")
    check(t)


def test_item_whose_file_only_another_process_holds_is_refused(spawn, python_exe, tmp_path):
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        t = _start(spawn, python_exe, f"foreign={efd}", pass_fds=[efd])
        with pytest.raises(UnsupportedError, match=rf"epoll fd \d+ watches a file added as fd {efd} "):
            pyckpt.dump(t.pid, tmp_path / "img", kill=True)
        assert t.alive()
        check(t)  # untouched
    finally:
        os.close(efd)
