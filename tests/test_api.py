"""The public API is what __all__ says, it is documented where a user looks
(help(pyckpt), the classes, the README), and every error has a distinct CLI
exit code and carries the attributes its class documents."""

import ast
import errno
import inspect
import os
import pickle
import re
from pathlib import Path

import psutil
import pytest

import pyckpt
from conftest import kill_own
from pyckpt import cli, errors
from test_refusals import CORRUPTIONS, corrupt_copy, free_pid, make_good_image

README = Path(__file__).parent.parent / "README.md"


def test_public_names_exist_and_are_documented():
    for name in pyckpt.__all__:
        obj = getattr(pyckpt, name)
        assert obj.__doc__, f"pyckpt.{name} has no docstring"
    public = {n for n in dir(pyckpt) if not n.startswith("_")}
    modules = {"arch", "errors", "proc", "seize", "inject", "kinds", "image", "ptrace_ops", "progress",
               "signals", "dumper", "restorer", "cli", "netns", "precopy", "problems", "limits",
               "privileges", "trust", "pytest", "hooks", "jupyter", "templates", "fastcopy", "lazy"}
    # (pytest rewrites the asserts of a plugin's distribution: pyckpt's, for the pytest11
    # entry point of pyckpt.pytest; that adds its '@py_builtins' and '@pytest_ar' names)
    public = {n for n in public if n.isidentifier()}
    # load_ipython_extension: IPython's hook for `%load_ext pyckpt` (pyckpt/jupyter/magics.py)
    assert public - modules - {"annotations", "os", "Path", "load_ipython_extension"} <= set(pyckpt.__all__)


def test_exit_codes_are_distinct():
    codes = [cls.exit_code for cls, _ in cli.EXIT_CODES]
    assert len(codes) == len(set(codes))
    assert all(c not in (0, 1, 2) for c in codes)
    assert issubclass(errors.AlreadyTracedError, errors.UnsuitableProcessError)


# --- help(pyckpt): an example first ------------------------------------------------------------

def docstring_example() -> str:
    """The code block that help(pyckpt) opens with."""
    doc = pyckpt.__doc__
    summary, rest = doc.split("\n\n", 1)
    assert summary.startswith("pyckpt: "), summary
    intro, rest = rest.split("\n\n", 1)
    assert intro.startswith("Example") and intro.endswith("::"), "help(pyckpt) must open with an example"
    block = []
    for line in rest.splitlines():
        if line and not line.startswith("    "):
            break
        block.append(line)
    return inspect.cleandoc("\n".join(block))


def test_help_opens_with_an_example_of_public_api_only():
    code = docstring_example()
    tree = ast.parse(code)
    used = {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "pyckpt"}
    assert used <= set(pyckpt.__all__), f"the example uses non-public names: {used - set(pyckpt.__all__)}"
    # what a newcomer needs first: dump, restore, copies, open/verify, catching errors
    assert {"dump", "restore", "open_image", "PyckptError"} <= used
    assert "new_pidns=True" in code and ".verify()" in code
    assert any(isinstance(n, ast.ExceptHandler) for n in ast.walk(tree))
    assert "DESIGN.md" not in pyckpt.__doc__  # it pointed at a file the repository does not have
    assert "Layout" in pyckpt.__doc__  # the map of modules is still there, below


def test_help_example_runs(spawn, tmp_path, monkeypatch, capsys):
    """The example, run as written against a process of ours (`sleep`): the dump, the
    restore refused because the original holds the PID, the copy, open and verify."""
    t = spawn(["sleep", "600"], name="sleep")
    monkeypatch.chdir(tmp_path)
    ours = {p.pid for p in psutil.Process().children()}
    try:
        exec(compile(docstring_example(), "help(pyckpt) example", "exec"), {"pid": t.pid})
    finally:
        for p in psutil.Process().children():  # the copy's PID-namespace init, if still there
            if p.pid not in ours:
                kill_own(p.pid)
    out = capsys.readouterr().out
    assert f"PID {t.pid} is taken" in out, out
    assert t.alive()
    assert (tmp_path / "img" / "COMPLETE").exists()


# --- errors: attributes documented and present -------------------------------------------------

# One instance of every public error class, as pyckpt constructs them.
SAMPLES = {
    pyckpt.PyckptError: pyckpt.PyckptError("message"),
    pyckpt.NoSuchProcessError: pyckpt.NoSuchProcessError("message", pid=12),
    pyckpt.UnsuitableProcessError: pyckpt.UnsuitableProcessError("message", pid=12),
    pyckpt.AlreadyTracedError: pyckpt.AlreadyTracedError(12, 34),
    pyckpt.UnsupportedError: pyckpt.UnsupportedError("message", pid=12),
    pyckpt.UnsupportedFdError: pyckpt.UnsupportedFdError(12, 5, "listening unix stream socket",
                                                         "socket:[999]"),
    pyckpt.ImageError: pyckpt.ImageError("message", path=Path("/img")),
    pyckpt.ImageWriteError: pyckpt.ImageWriteError("message", path="/img"),
    pyckpt.PidInUseError: pyckpt.PidInUseError(12),
    pyckpt.FileChangedError: pyckpt.FileChangedError("/f", "size 12, was 10"),
    pyckpt.KernelMismatchError: pyckpt.KernelMismatchError("message"),
    pyckpt.RestoreError: pyckpt.RestoreError("message"),
    pyckpt.DumpError: pyckpt.DumpError("message"),
    pyckpt.PtraceError: pyckpt.PtraceError("PTRACE_SEIZE", 12, errno.EPERM),
    pyckpt.LockConflictError: pyckpt.LockConflictError(12, 5, "/f", "POSIX write lock on bytes 0-9",
                                                       "a POSIX write lock held by process 34", [34]),
    pyckpt.PortInUseError: pyckpt.PortInUseError("UDP", "127.0.0.1", 5353, "message"),
    pyckpt.SocketPathInUseError: pyckpt.SocketPathInUseError("/run/app.sock", "message"),
    pyckpt.ResourceError: pyckpt.ResourceError("message", resource="open files (RLIMIT_NOFILE)", limit=64,
                                               fd=200, errno_=errno.EMFILE),
    pyckpt.PrivilegeError: pyckpt.PrivilegeError("message", missing=["root (pyckpt runs as uid 1000)"],
                                                 operation="dump"),
    pyckpt.UntrustedImageError: pyckpt.UntrustedImageError("message", path=Path("/img"), owner=1000,
                                                           wants="uid 0 (root, with every capability)"),
    pyckpt.RemoteCallError: pyckpt.RemoteCallError("injected mmap", 12, errno.ENOMEM),
    pyckpt.InternalError: pyckpt.InternalError("dump of process 12", TypeError("a bug")),
    pyckpt.Interrupted: pyckpt.Interrupted("message"),
}


def public_errors() -> list[type]:
    return [obj for name in pyckpt.__all__
            if isinstance(obj := getattr(pyckpt, name), type) and issubclass(obj, pyckpt.PyckptError)]


def documented_attributes(cls) -> set[str]:
    """The names a class's docstring lists under "Attributes:" (none: "Attributes: none ...")."""
    doc = inspect.cleandoc(cls.__doc__)
    assert "Attributes:" in doc, f"{cls.__name__} does not document its attributes"
    section = doc.split("Attributes:", 1)[1]
    return set(re.findall(r"^    (\w+): ", section, re.M))


def test_every_error_documents_the_attributes_it_carries():
    assert set(public_errors()) == set(SAMPLES), "add the new error class to SAMPLES"
    # every class has what the base class documents (exit_code, fixes)
    common = documented_attributes(pyckpt.PyckptError)
    assert common == {"exit_code", "fixes"}
    for cls in public_errors():
        e = SAMPLES[cls]
        documented = documented_attributes(cls) | common
        carried = {k for k in vars(e) if not k.startswith("_")}
        assert carried <= documented, f"{cls.__name__} carries undocumented {carried - documented}"
        for name in documented:
            assert hasattr(e, name), f"{cls.__name__}.{name} is documented but absent"
        assert e.fixes == ()  # the class default, until a raise site says which options avoid it
    assert SAMPLES[pyckpt.ImageError].path == "/img"  # a str, like the other .path attributes


def test_fixes_set_by_a_raise_site_are_documented_and_pickle():
    """problems.needs() marks an error with the options that avoid it: `.fixes`, documented
    on PyckptError, carried on the instance, kept by pickle, never shared with the class."""
    from pyckpt.problems import needs

    e = needs(pyckpt.PidInUseError(12), pyckpt.Fix("new_pidns"))
    assert e.fixes == (pyckpt.Fix("new_pidns"),)
    assert needs(e, pyckpt.Fix("new_pidns"), pyckpt.Fix("fds", 1)).fixes == (
        pyckpt.Fix("new_pidns"), pyckpt.Fix("fds", 1))
    carried = {k for k in vars(e) if not k.startswith("_")}
    assert carried <= documented_attributes(pyckpt.PidInUseError) | documented_attributes(pyckpt.PyckptError)
    assert pickle.loads(pickle.dumps(e)).fixes == e.fixes
    assert pyckpt.PidInUseError.fixes == pyckpt.PyckptError.fixes == ()


def test_error_attributes_are_listed_in_help_and_readme():
    """help(pyckpt) and the README's Python API section name every error class and, on its
    line, every attribute it carries."""
    readme = README.read_text()
    api = readme[readme.index("## Python API"):]
    api = api[: api.index("\n## ", 1)]
    for where, text in (("help(pyckpt)", pyckpt.__doc__), ("README", api)):
        for cls in public_errors():
            if cls is pyckpt.PyckptError:
                continue
            all_lines = text.splitlines() + [""]
            # the lines naming the class, each with the next (a README item may wrap)
            near = "\n".join(line + "\n" + all_lines[i + 1] for i, line in enumerate(all_lines)
                             if re.search(rf"\b{cls.__name__}\b", line))
            assert near, f"{where} does not name {cls.__name__}"
            attrs = documented_attributes(cls)
            missing = [a for a in attrs if f".{a}" not in near]
            assert not missing, f"{where}: {cls.__name__} without {missing}"


def test_errors_pickle_with_their_attributes():
    """For a dump in a worker process (multiprocessing, concurrent.futures)."""
    for cls, e in SAMPLES.items():
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is cls
        assert str(back) == str(e)
        assert vars(back) == vars(e)


# --- errors: attributes set by the real raise sites --------------------------------------------

def test_no_such_process_has_pid(tmp_path):
    pid = free_pid()
    with pytest.raises(pyckpt.NoSuchProcessError) as ei:
        pyckpt.dump(pid, tmp_path / "img")
    assert ei.value.pid == pid
    assert str(pid) in str(ei.value)
    assert not (tmp_path / "img").exists()
    with pytest.raises(pyckpt.NoSuchProcessError) as ei:
        pyckpt.dump(0, tmp_path / "img")
    assert ei.value.pid == 0


def test_unsuitable_process_has_pid(tmp_path):
    with pytest.raises(pyckpt.UnsuitableProcessError) as ei:
        pyckpt.dump(os.getpid(), tmp_path / "img")  # pyckpt itself: refused from /proc alone
    assert ei.value.pid == os.getpid()


def test_image_write_error_has_path(spawn, tmp_path):
    t = spawn(["sleep", "600"], name="sleep")
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine").write_text("not an image")
    with pytest.raises(pyckpt.ImageWriteError) as ei:
        pyckpt.dump(t.pid, full)
    assert ei.value.path == str(full)
    assert (full / "mine").read_text() == "not an image"
    assert t.state() in "SR"


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_image_error_has_path(name, spawn, python_exe, tmp_path, tmp_path_factory):
    good, _ = make_good_image(spawn, python_exe, tmp_path_factory, "plain")
    bad = corrupt_copy(name, good, tmp_path)
    with pytest.raises(pyckpt.ImageError) as ei:
        pyckpt.open_image(bad).verify()
    assert ei.value.path == str(bad)
    with pytest.raises(pyckpt.ImageError) as ei:
        pyckpt.restore(bad)
    assert ei.value.path == str(bad)


# --- Image and progress= ------------------------------------------------------------------------

def test_image_attributes_and_progress(spawn, tmp_path):
    t = spawn(["sleep", "600"], name="sleep")
    image = pyckpt.dump(t.pid, tmp_path / "a", progress=False)
    assert image.pid == image.header.root_pid == t.pid
    assert image.header.comm == "sleep"
    assert image.header.kernel_release == os.uname().release
    assert "TaskRecord" in {type(r).__name__ for r in image.records}
    stats = image.dump_stats
    assert 0 < stats.freeze <= stats.total
    assert stats.pages_bytes > 0 and isinstance(stats.phases, dict)
    summary = image.summary()
    assert {"path", "header", "pages_bytes", "processes", "shared_memory", "vmas", "fds", "locks",
            "records"} <= set(summary)
    assert summary["pages_bytes"] > 0
    assert summary["processes"][0]["pid"] == t.pid

    assert pyckpt.dump(t.pid, tmp_path / "b", progress=True).pid == t.pid  # a bar (after 1 s)

    opened = pyckpt.open_image(tmp_path / "a")
    assert opened.dump_stats is None
    opened.verify(progress=True)
    opened.verify(progress=False)
    checked = []
    opened.verify(checked.append)  # a callable is given bytes as they are checked
    assert sum(checked) > 0

    for bad in ("yes", 1):
        with pytest.raises(TypeError, match="progress"):
            pyckpt.dump(t.pid, tmp_path / "c", progress=bad)
        assert not (tmp_path / "c").exists()
        with pytest.raises(TypeError, match="progress"):
            pyckpt.restore(tmp_path / "a", progress=bad)
    assert t.state() in "SR"
