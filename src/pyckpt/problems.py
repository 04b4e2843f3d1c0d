"""What stops a restore before it makes a process, and which option avoids it.

Restore validates everything before the first process exists (the image,
the PIDs, every file it opens, the ports it listens on...).  Validation
notes each refusal as a `RestoreProblem` and goes on, so that
`Image.check_restore()` (`pyckpt check --restore`) can list them all;
`restore()` runs the very same validation and raises the first problem's
error.  A raise site that knows which option avoids its refusal says so with
`needs(error, Fix(...))`.
"""

from __future__ import annotations

from ._dataclass import dataclass

from .errors import ImageError, PyckptError

# the order in which options are suggested when several avoid one problem
PREFERRED = ("new_pidns", "new_netns", "shell_job", "inherit_stdio", "allow_changed_files", "deleted_dir", "fds")


@dataclass(frozen=True)
class Fix:
    """A restore option that avoids a problem.

    `option` is the keyword of `pyckpt.restore()` ("new_pidns", "fds",
    "inherit_stdio", "allow_changed_files", "deleted_dir", "new_netns"); with
    "fds", `fd` is the fd number that wants a replacement.  `str(fix)` is the
    `pyckpt restore` spelling ("--new-pidns", "--fd 1=PATH"), `fix.keyword`
    the API's ("new_pidns=True", "fds={1: f}").
    """

    option: str
    fd: int | None = None

    def __str__(self) -> str:
        if self.option == "fds":
            return f"--fd {self.fd}=PATH"
        if self.option == "deleted_dir":
            return "--deleted-dir DIR"
        return "--" + self.option.replace("_", "-")

    @property
    def keyword(self) -> str:
        if self.option == "fds":
            return f"fds={{{self.fd}: f}}"
        if self.option == "deleted_dir":
            return "deleted_dir=DIR"
        return f"{self.option}=True"


def needs(error: PyckptError, *fixes: Fix) -> PyckptError:
    """`error`, marked as avoided by any one of `fixes` (for a raise site that knows)."""
    error.fixes = error.fixes + tuple(f for f in fixes if f not in error.fixes)  # () by default
    return error


@dataclass
class RestoreProblem:
    """One reason a restore would stop before it creates any process.

    `error` is the exception restore would raise for it (a `PyckptError`:
    `PidInUseError`, `FileChangedError`, `RestoreError`, ...); `fixes` the
    restore options each of which alone avoids it (`Fix`), empty when no
    option does (a file that is gone, a lock held by another process, another
    kernel).  `str(problem)` is the error's message.
    """

    error: PyckptError
    fixes: tuple[Fix, ...] = ()

    def __str__(self) -> str:
        return str(self.error)


def collectable(error: BaseException) -> bool:
    """Whether validation may note `error` and go on: a refusal about this machine
    and these options; not a damaged image, an interrupt or a bug."""
    return isinstance(error, PyckptError) and not isinstance(error, ImageError)


def suggested(problems: list[RestoreProblem]) -> list[Fix] | None:
    """Options that together avoid every problem (few, the plainest first), or None
    when some problem has no option that avoids it."""
    if any(not p.fixes for p in problems):
        return None
    chosen: list[Fix] = []
    for p in problems:
        if any(f in chosen for f in p.fixes):
            continue
        chosen.append(min(p.fixes, key=lambda f: (
            PREFERRED.index(f.option) if f.option in PREFERRED else len(PREFERRED),
            -sum(f in q.fixes for q in problems))))
    return sorted(chosen, key=lambda f: (PREFERRED.index(f.option) if f.option in PREFERRED
                                         else len(PREFERRED), f.fd or 0))
