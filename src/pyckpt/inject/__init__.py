"""Run code inside a stopped task (compel's role).

`Injector` has compel's lifecycle: entering blocks every signal of the task
(so nothing interrupts a single-step), `call()` runs one syscall at a
`syscall` instruction the task can execute, and leaving *always* cures: the
task's own signal mask and registers go back, any scratch page is unmapped.

A dump's target must come to no harm even if pyckpt is killed (SIGKILL, OOM)
at any moment, when nothing can cure it.  `Injector(..., held=True)` (a
dump's) runs each call so that a task abandoned at any moment returns to
its own state by itself: parked at an rt_sigreturn gadget of its own code
over a signal frame of its own state (inject/trampoline.py, `ck_tramp_call`),
or, where no gadget can be used, holding foreign state only for the call and
parked with its own registers and mask in an interrupt stop between calls
(`ck_inject_held`, `ck_park`), where a dead tracer's task simply carries on.

The single-step loop is C (`ck_inject`); a call costs a few microseconds
when pyckpt runs on the task's CPU (see seize.pinned_to_cpu).

A restore runs most of its calls in batches (`Injector.batch()`): a table of
syscalls in the task's scratch memory, run by a small loop of machine code
there (BATCH_CODE) in one stop and resume instead of one per call.  Only
where pyckpt may write and run code of its own in the task (a restore's
scratch area, `use_batches`): a dump's target never runs pyckpt's code.
"""

from __future__ import annotations

import errno
import os
import _signal as signal  # (signal's constants without its enums' import)
import struct

from .. import proc
from .. import ptrace_ops as pt
from .._native._ck import ffi, lib
from ..arch import PAGE
from ..errors import PtraceError, PyckptError, RemoteCallError
from ..signals import blocked, checkpoint
from . import nr, trampoline

ALL_SIGNALS = (1 << 64) - 1
U64 = (1 << 64) - 1
SCRATCH_GAP = 64  # between a held thread's frame and the scratch page below it (scratch_page)

# The batch loop: rbx points at a table of BATCH_ENTRY rows (nr, six arguments,
# want), r12 holds their count.  Each row's syscall runs; its result replaces nr.
# A result that is not what the row wants (WANT_ANY: anything; WANT_OK: not
# -errno; else exactly that value) stops the loop there, as does the end of the
# table, at an int3 (a SIGTRAP stop; r12 is 0 only after the last row).
#   1: test %r12,%r12; je 9f
#      mov (%rbx),%rax; mov 8(%rbx),%rdi; mov 16(%rbx),%rsi; mov 24(%rbx),%rdx
#      mov 32(%rbx),%r10; mov 40(%rbx),%r8; mov 48(%rbx),%r9; syscall
#      mov %rax,(%rbx); mov 56(%rbx),%rcx; movabs $1<<63,%r11
#      cmp %r11,%rcx; je 2f                       (WANT_ANY)
#      inc %r11; cmp %r11,%rcx; jne 3f             (WANT_OK?)
#      cmp $-4095,%rax; jae 9f; jmp 2f             (-errno: stop)
#   3: cmp %rcx,%rax; jne 9f                       (exact value)
#   2: add $64,%rbx; dec %r12; jmp 1b
#   9: int3
BATCH_CODE = bytes.fromhex(
    "4d85e47453488b03488b7b08488b7310488b53184c8b53204c8b43284c8b4b300f05488903488b4b38"
    "49bb00000000000000804c39d9741749ffc34c39d9750a483d01f0ffff7310eb054839c875094883c3"
    "4049ffcceba8cc")
BATCH_CODE_ROOM = 128  # the table starts this far into the batch area
BATCH_ENTRY = struct.Struct("<8q")
WANT_ANY = -(1 << 63)
WANT_OK = WANT_ANY + 1


def find_syscall_insn(code: bytes) -> int:
    """Offset of a `syscall` instruction in vDSO text.

    Prefer the `mov $nr, %eax; syscall` pattern of the vDSO's fallback paths:
    there 0f 05 is surely an instruction and not bytes of another one.
    """
    # b8 ?? (00|01) 00 00 0f 05, found without `re` (not in a command's start-up)
    i = code.find(b"\x00\x00\x0f\x05", 3)
    while i >= 0:
        if code[i - 3] == 0xB8 and code[i - 1] <= 1:
            return i + 2
        i = code.find(b"\x00\x00\x0f\x05", i + 1)
    i = code.find(b"\x0f\x05")
    if i < 0:
        raise PyckptError("no syscall instruction found in the vDSO")
    return i


class Injector:
    """Inject syscalls into stopped task `pid`, starting from registers `regs`."""

    def __init__(self, pid: int, site: int, regs: bytes | None = None, *, cure_regs: bool = True,
                 held: bool = False, maps=None):
        self.held = held
        self.pid = pid
        self.site = site
        self.regs = regs if regs is not None else pt.get_regs(pid)
        self.cure_regs = cure_regs
        self.calls = 0
        self._sigmask: int | None = None
        self._scratch: int | None = None
        self._args = ffi.new("long[6]")
        self._result = ffi.new("long *")
        self._status = ffi.new("int *")
        self._tmpl = ffi.from_buffer(self.regs)
        self._mem: int | None = None
        self._curing = False
        self.gadget: int | None = None  # held injectors: the process's rt_sigreturn gadget
        self._frame_sp = 0  # armed: the stack pointer that makes the gadget return home
        self.maps = maps  # the process's maps as the caller read them (else read when needed)
        self.syscalls = 0  # syscalls run, batched ones included (`calls` counts stops)
        self._batch_area: tuple[int, int] | None = None  # (address, size): see use_batches

    # -- lifecycle -------------------------------------------------------
    def __enter__(self) -> "Injector":
        self._sigmask = pt.get_sigmask(self.pid)
        if not self.held:  # a held task's mask is blocked only during each call
            pt.set_sigmask(self.pid, ALL_SIGNALS)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.cure()

    def cure(self) -> None:
        """Undo everything the injector did; runs even after errors.

        SIGINT/SIGTERM are held off meanwhile: a second Ctrl-C must not
        leave the task half-cured.
        """
        self._curing = True
        try:
            with blocked():
                self._cure()
        finally:
            self._curing = False

    def _cure(self) -> None:
        first_error = None
        steps = []
        if self._scratch is not None:
            steps.append(lambda: self.call(nr.munmap, self._scratch, PAGE))
        if self._frame_sp:
            steps.append(self._disarm)
        if self._sigmask is not None:
            steps.append(lambda: pt.set_sigmask(self.pid, self._sigmask))
        if self.cure_regs:  # a call failed with the stop's own EINTR runs again (trampoline.rewind_eintr)
            steps.append(lambda: pt.set_regs(self.pid, trampoline.rewind_eintr(self.regs)))
        for step in steps:
            try:
                step()
            except PyckptError as e:
                first_error = first_error or e
        self._scratch = None
        self._sigmask = None
        if self._mem is not None:
            os.close(self._mem)
            self._mem = None
        if first_error is not None:
            raise first_error

    @property
    def saved_sigmask(self) -> int:
        """The task's own blocked mask, as it was before the injector blocked everything."""
        assert self._sigmask is not None
        return self._sigmask

    def forget_sigmask(self) -> None:
        """The caller sets the final signal mask itself (restore)."""
        self._sigmask = None

    # -- calls -----------------------------------------------------------
    def call(self, number: int, *args: int) -> int:
        """Run syscall `number` in the task; returns the raw result (-errno on error).

        A SIGINT/SIGTERM noted since the last call is raised here, before the
        call, never between a call and the bookkeeping of its result.
        """
        if not self._curing:
            checkpoint()
        a = self._args
        for i in range(6):
            v = args[i] if i < len(args) else 0
            a[i] = v - (1 << 64) if v >= (1 << 63) else v
        if self._armed():
            r = lib.ck_tramp_call(self.pid, self._tmpl, self.gadget, self._frame_sp, number, a,
                                  self._result, self._status)
        elif self.held:
            r = lib.ck_inject_held(self.pid, self._tmpl, self._sigmask, self.site, number, a,
                                   self._result, self._status)
            if r == 2:
                raise PyckptError(
                    f"process {self.pid} did not stop again after injected {nr.name(number)} "
                    f"(wait status {self._status[0]:#x})")
        else:
            r = lib.ck_inject(self.pid, self._tmpl, self.site, number, a, self._result, self._status)
        if r < 0:
            raise PtraceError(f"injected syscall {nr.name(number)}", self.pid, -r)
        if r == 1:
            st = self._status[0]
            raise PyckptError(
                f"process {self.pid} stopped unexpectedly during injected "
                f"{nr.name(number)} (wait status {st:#x})"
            )
        self.calls += 1
        self.syscalls += 1
        return int(self._result[0])

    def _armed(self) -> bool:
        """Arm a held injector's frame if it can be (as call() does first): whether its
        calls are trampoline calls (ck_tramp_call)."""
        if self.held and self.gadget and not self._curing and not self._frame_sp:
            self._arm()
        return bool(self._frame_sp)

    # -- batches ---------------------------------------------------------
    def use_batches(self, addr: int, size: int) -> None:
        """Run batches in the task's memory [addr, addr + size): read-write-execute
        memory pyckpt mapped there (a restore's scratch area), unmapped with it."""
        self.write(addr, BATCH_CODE)
        self._batch_area = (addr, size)

    def batch(self) -> "Batch":
        """A batch of calls run with one resume of the task (see Batch)."""
        return Batch(self)

    def _run_table(self, table: int, count: int) -> int:
        """Run `count` rows at `table` with BATCH_CODE; the index of the row that
        stopped the loop, or `count` when all ran."""
        assert self._batch_area is not None
        if not self._curing:
            checkpoint()
        regs = pt.decode_regs(self.regs)
        regs.rip, regs.rbx, regs.r12, regs.orig_rax = self._batch_area[0], table, count, U64
        pt.set_regs(self.pid, pt.encode_regs(regs))
        pt.request(pt.PTRACE_CONT, self.pid, 0, 0, "PTRACE_CONT")
        status = pt.wait(self.pid)
        if not (os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP and status >> 16 == 0):
            raise PyckptError(f"process {self.pid} stopped unexpectedly during a batch of injected calls "
                              f"(wait status {status:#x})")
        out = pt.decode_regs(pt.get_regs(self.pid))
        done = (out.rbx - table) // BATCH_ENTRY.size
        if out.rip != self._batch_area[0] + len(BATCH_CODE) or not 0 <= done <= count \
                or (out.r12 == 0) != (done == count):
            raise PyckptError(f"process {self.pid}: a batch of injected calls ended at {out.rip:#x} "
                              f"after {done} of {count} calls")
        self.calls += 1
        self.syscalls += min(done + 1, count)
        return done

    def call_clone(self, number: int, *args: int) -> int:
        """Run a clone/clone3 in the task, which must trace it (PTRACE_O_TRACECLONE for
        threads, PTRACE_O_TRACEFORK for fork-like clones whose exit signal is SIGCHLD).

        Returns the new task's TID; it is traced by pyckpt and stopped before
        it ran a single instruction.
        """
        checkpoint()
        regs = pt.decode_regs(self.regs)
        regs.rip, regs.rax, regs.orig_rax = self.site, number, (1 << 64) - 1
        for name, v in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
            setattr(regs, name, v & ((1 << 64) - 1))
        pt.set_regs(self.pid, pt.encode_regs(regs))
        pt.request(pt.PTRACE_SINGLESTEP, self.pid, 0, 0, "PTRACE_SINGLESTEP")
        status = pt.wait(self.pid)
        if os.WIFSTOPPED(status) and os.WSTOPSIG(status) == 5 and (status >> 16) in (
                pt.PTRACE_EVENT_FORK, pt.PTRACE_EVENT_CLONE):
            new = pt.get_event_msg(self.pid)
            pt.request(pt.PTRACE_SINGLESTEP, self.pid, 0, 0, "PTRACE_SINGLESTEP")
            status = pt.wait(self.pid)
            if not (os.WIFSTOPPED(status) and os.WSTOPSIG(status) == 5):
                raise PyckptError(f"process {self.pid} did not finish its injected clone (status {status:#x})")
            st = pt.wait(new)
            if not os.WIFSTOPPED(st):
                raise PyckptError(f"the new thread {new} of process {self.pid} did not stop (status {st:#x})")
            self.calls += 1
            return new
        if os.WIFSTOPPED(status) and os.WSTOPSIG(status) == 5:
            err = pt.decode_regs(pt.get_regs(self.pid)).rax
            err = err - (1 << 64) if err >= (1 << 63) else err
            if -4096 < err < 0:
                raise RemoteCallError(f"injected {nr.name(number)}", self.pid, -err)
        raise PyckptError(f"process {self.pid} stopped unexpectedly during injected "
                          f"{nr.name(number)} (wait status {status:#x})")

    def check(self, number: int, *args: int, what: str = "") -> int:
        """Like call(), but a -errno result raises RemoteCallError."""
        r = self.call(number, *args)
        if -4096 < r < 0:
            raise RemoteCallError(what or nr.name(number), self.pid, -r)
        return r

    # -- memory ----------------------------------------------------------
    def _memfd(self) -> int:
        if self._mem is None:
            self._mem = os.open(f"/proc/{self.pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        return self._mem

    def write(self, addr: int, data: bytes) -> None:
        """Write into the task through /proc/PID/mem (works on read-only pages too)."""
        n = os.pwrite(self._memfd(), data, addr)
        if n != len(data):
            raise PyckptError(f"short write into process {self.pid} at {addr:#x}")

    def read(self, addr: int, size: int) -> bytes:
        buf = ffi.new("char[]", size)
        r = lib.ck_vm_read(self.pid, addr, buf, size)
        if r != size:
            data = os.pread(self._memfd(), size, addr)
            if len(data) != size:
                raise PyckptError(f"cannot read {size} bytes of process {self.pid} at {addr:#x}")
            return data
        return bytes(ffi.buffer(buf, size))

    def map_scratch(self) -> int:
        """Map one private read-write page in the task, unmapped again on cure.

        A held injector first looks for the process's rt_sigreturn gadget, so
        that this and every later call is self-curing; give it to the other
        threads' injectors with `share()`.
        """
        if self.held:
            self.use_gadget()
        return self._map_page()

    def _map_page(self) -> int:
        addr = self.check(nr.mmap, 0, PAGE, 0x3, 0x22, -1, 0, what="mmap of a scratch page")
        self._scratch = addr
        return addr

    def scratch_page(self) -> int:
        """A page of memory the task's calls can write their results into: for a held
        injector whose frame is armed below the task's stack pointer (see _arm), the
        page of stack below that frame — memory below a stack pointer holds nothing
        the program may still read, and nothing has to be mapped into the target
        or unmapped again (two injected calls fewer); else a page mapped for it
        (map_scratch).  Every thread's injector may use it (the leader is stopped)."""
        if self.held:
            self.use_gadget()
            if self.gadget and not self._frame_sp:
                self._arm()
            if self._frame_sp:
                frame = self._frame_sp - 8
                low = (frame - SCRATCH_GAP - PAGE) & ~63
                if trampoline.on_a_stack(self._maps(), low, pt.decode_regs(self.regs).rsp):
                    return low
            return self._map_page()
        return self.map_scratch()

    def use_gadget(self) -> None:
        """Find the process's rt_sigreturn gadget: from the next call on, calls are
        self-curing (inject/trampoline.py).  The task must be seized with
        PTRACE_O_TRACESYSGOOD (seize.Seized does that)."""
        self.gadget = trampoline.find_gadget(self.pid, self._maps())

    def _maps(self):
        """The process's maps: as the caller read them while it was stopped (a frozen
        process's stacks and code do not move; the scratch page pyckpt maps is
        neither), else read now."""
        if self.maps is None:
            self.maps = proc.read_maps(self.pid)
        return self.maps

    def share(self, leader: "Injector") -> None:
        """Use the gadget `leader` (an injector of the same process) found."""
        self.gadget = leader.gadget

    def _arm(self) -> None:
        """Write this thread's frame below its stack pointer and park it at the gadget.

        Where the frame cannot be written — the stack pointer is not on a stack
        pyckpt can tell is one (trampoline.on_a_stack), or no memory is there —
        this thread's calls are held ones instead.
        """
        own = pt.decode_regs(self.regs)
        resume = trampoline.resume_regs(own, trampoline.rseq_cs(self.read, self.pid))
        fp = trampoline.fpstate(pt.get_xstate(self.pid))
        at = trampoline.frame_address(own.rsp, len(fp))
        if not trampoline.on_a_stack(self._maps(), at, own.rsp):
            self.gadget = None
            return
        try:
            self.write(at, trampoline.frame(resume, self._sigmask, fp, at))
        except (OSError, PyckptError):
            self.gadget = None
            return
        parked = pt.decode_regs(self.regs)
        parked.rip, parked.rsp, parked.orig_rax = self.gadget, at + 8, U64
        pt.set_regs(self.pid, pt.encode_regs(parked))  # from here the frame brings it home
        pt.set_sigmask(self.pid, ALL_SIGNALS)
        self._frame_sp = at + 8

    def _disarm(self) -> None:
        """Own mask, then own registers, parked in an interrupt stop: the frame is not needed."""
        r = lib.ck_park(self.pid, self._tmpl, self._sigmask, self._status)
        if r < 0:
            raise PtraceError("parking the task", self.pid, -r)
        if r == 1:
            raise PyckptError(f"process {self.pid} did not stop again after its last injected call "
                              f"(wait status {self._status[0]:#x})")
        self._frame_sp = 0


_HAVE_MANY = hasattr(lib, "ck_tramp_call_many")  # (a helper built before it: one call at a time)


def spread(threads: list["Injector"], scratch: int, calls: list[tuple[int, object, str]],
           size: int) -> list[bytes]:
    """Calls whose effect is the whole process's (a signal's action, an interval timer),
    each run by one of the process's threads, several at once (check_each), instead of
    one after another by the leader: a frozen Python kernel's 11 threads take its
    signal actions and timers in two rounds instead of eight calls.  Each row of
    `calls` is (number, args(at), what): `args` gives the call's arguments for `at`, the
    address of a slot of `scratch` (a page of the leader's, that every thread may
    write) where the call leaves `size` bytes; returns those bytes, row by row."""
    slot = (size + 63) & ~63
    per_round = max(1, min(len(threads), PAGE // slot))
    out: list[bytes] = []
    for first in range(0, len(calls), per_round):
        part = calls[first:first + per_round]
        check_each([(threads[i], what, number, args(scratch + i * slot))
                    for i, (number, args, what) in enumerate(part)])
        raw = threads[0].read(scratch, len(part) * slot)
        out += [raw[i * slot:i * slot + size] for i in range(len(part))]
    return out


def check_each(rows: list[tuple["Injector", str, int, tuple]]) -> list[int]:
    """One call in each of several tasks (threads of a dump's frozen process), as
    `inj.check(number, *args, what=what)` for each (inj, what, number, args) row, the
    injectors distinct: the tasks armed on their trampolines run their calls at
    once (ck_tramp_call_many: their stops overlap), any other one by one.  Every
    call runs before the first failure, in row order, is raised."""
    checkpoint()
    results: list[int | BaseException] = [0] * len(rows)
    together = [i for i, (inj, *_) in enumerate(rows) if _HAVE_MANY and inj._armed()]
    if len(together) < 2:
        together = []
    alone = set(range(len(rows))) - set(together)
    for i, (inj, what, number, args) in enumerate(rows):
        if i in alone:
            try:
                results[i] = inj.check(number, *args, what=what)
            except PyckptError as e:
                results[i] = e
    if together:
        n = len(together)
        injs = [rows[i][0] for i in together]
        pids = ffi.new("int[]", [inj.pid for inj in injs])
        keep = [inj._tmpl for inj in injs]
        tmpls = ffi.new("void *[]", keep)
        gadgets = ffi.new("unsigned long[]", [inj.gadget for inj in injs])
        sps = ffi.new("unsigned long[]", [inj._frame_sp for inj in injs])
        nrs = ffi.new("long[]", [rows[i][2] for i in together])
        flat = []
        for i in together:
            args = [v - (1 << 64) if v >= (1 << 63) else v for v in rows[i][3]]
            flat += args + [0] * (6 - len(args))
        args_c = ffi.new("long[]", flat)
        out = ffi.new("long[]", n)
        statuses = ffi.new("int[]", n)
        rcs = ffi.new("int[]", n)
        lib.ck_tramp_call_many(n, pids, tmpls, gadgets, sps, nrs, args_c, out, statuses, rcs)
        for k, i in enumerate(together):
            inj, what, number, _ = rows[i]
            rc, r = rcs[k], int(out[k])
            if rc < 0:
                results[i] = PtraceError(f"injected syscall {nr.name(number)}", inj.pid, -rc)
            elif rc == 1:
                results[i] = PyckptError(f"process {inj.pid} stopped unexpectedly during injected "
                                         f"{nr.name(number)} (wait status {statuses[k]:#x})")
            else:
                inj.calls += 1
                inj.syscalls += 1
                results[i] = RemoteCallError(what or nr.name(number), inj.pid, -r) if -4096 < r < 0 else r
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results  # type: ignore[return-value]


_NO_ARGS = (0,) * 6  # a batch row's unused arguments


class Batch:
    """Syscalls run in order by the task itself, from a table in its batch area
    (Injector.use_batches), with one stop and resume for up to a few hundred (a
    batch of one call is injected as a single call: that costs less).

    `add()` queues a call and what its result must be; `data()` places bytes the
    calls point to (written with the table); `run()` runs them all and returns
    their results, or raises for the first call whose result is not what it
    wanted (the ones after it did not run): `fail(result)` if given, else a
    RemoteCallError (-errno) or PyckptError naming `what`.
    """

    def __init__(self, inj: Injector):
        self.inj = inj
        self.rows: list[tuple] = []
        self._data = bytearray()

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, number: int, *args: int, want: int = WANT_OK, what: str = "", fail=None) -> int:
        """Queue syscall `number`; returns its index in run()'s results."""
        if args and max(args) >= 1 << 63:  # (as the signed longs the table holds)
            args = tuple(v - (1 << 64) if v >= (1 << 63) else v for v in args)
        self.rows.append((number, *args, *_NO_ARGS[len(args):], want, what, fail))
        return len(self.rows) - 1

    def data(self, blob: bytes) -> int:
        """Address in the task where `blob` will be when the calls run (8-byte aligned)."""
        if self.inj._batch_area is None:
            raise PyckptError(f"process {self.inj.pid}: no batch area for the data of injected calls")
        addr, size = self.inj._batch_area
        at = len(self._data)
        self._data += blob
        self._data += bytes(-len(self._data) % 8)
        if len(self._data) > size // 2:
            raise ValueError(f"batch data of {len(self._data)} bytes does not fit in {size // 2}")
        return addr + size - size // 2 + at

    def run(self) -> list[int]:
        rows, self.rows = self.rows, []
        data, self._data = bytes(self._data), bytearray()
        if not rows:
            return []
        inj = self.inj
        if inj._batch_area is None:  # one call at a time, with the same checks
            return [self._one(row) for row in rows]
        addr, size = inj._batch_area
        table = addr + BATCH_CODE_ROOM
        if data:
            inj.write(addr + size - size // 2, data)
        if len(rows) == 1:  # a lone call costs less injected as such than as a table
            return [self._one(rows[0])]
        room = (size - size // 2 - BATCH_CODE_ROOM) // BATCH_ENTRY.size
        results: list[int] = []
        for first in range(0, len(rows), room):
            part = rows[first:first + room]
            inj.write(table, b"".join(BATCH_ENTRY.pack(*r[:8]) for r in part))
            done = inj._run_table(table, len(part))
            raw = inj.read(table, BATCH_ENTRY.size * min(done + 1, len(part)))
            results += [BATCH_ENTRY.unpack_from(raw, i * BATCH_ENTRY.size)[0]
                        for i in range(min(done + 1, len(part)))]
            if done < len(part):
                self._failed(part[done], results[-1])
        return results

    def _one(self, row: tuple) -> int:
        number, *args, want, what, fail = row
        r = self.inj.call(number, *args)
        if want != WANT_ANY and (r != want if want != WANT_OK else -4096 < r < 0):
            self._failed(row, r)
        return r

    def _failed(self, row: tuple, r: int):
        number, *_, want, what, fail = row
        if fail is not None:
            raise fail(r)
        if -4096 < r < 0:
            raise RemoteCallError(what or nr.name(number), self.inj.pid, -r)
        raise PyckptError(f"{what or nr.name(number)} in process {self.inj.pid} returned {r:#x}, not {want:#x}")


def injection_site_from(pid: int, vdso_start: int, vdso_size: int) -> int:
    """Address of a `syscall` instruction inside task `pid`'s vDSO."""
    buf = ffi.new("char[]", vdso_size)
    r = lib.ck_vm_read(pid, vdso_start, buf, vdso_size)
    if r != vdso_size:
        raise PtraceError("reading the vDSO", pid, errno.EFAULT if r >= 0 else -r)
    return vdso_start + find_syscall_insn(bytes(ffi.buffer(buf, vdso_size)))
