"""The public API is what __all__ says, and every error has a distinct CLI exit code."""

import pyckpt
from pyckpt import cli, errors


def test_public_names_exist_and_are_documented():
    for name in pyckpt.__all__:
        obj = getattr(pyckpt, name)
        assert obj.__doc__, f"pyckpt.{name} has no docstring"
    public = {n for n in dir(pyckpt) if not n.startswith("_")}
    modules = {"errors", "proc", "seize", "inject", "kinds", "image", "ptrace_ops", "progress",
               "signals", "dumper", "restorer", "cli", "netns", "precopy"}
    assert public - modules - {"annotations", "os", "Path"} <= set(pyckpt.__all__)


def test_exit_codes_are_distinct():
    codes = [cls.exit_code for cls, _ in cli.EXIT_CODES]
    assert len(codes) == len(set(codes))
    assert all(c not in (0, 1, 2) for c in codes)
    assert issubclass(errors.AlreadyTracedError, errors.UnsuitableProcessError)
