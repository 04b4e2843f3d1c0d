"""The README's Quick start gives exactly two set-up commands, and CI runs both."""

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [m.group(1).strip() for m in re.finditer(r"^    (\S.*)$", section, re.M)]


def test_readme_has_two_setup_commands_and_ci_runs_them():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.startswith("bash scripts/setup.sh && ") and "examples/demo.py" in demo
    assert tests.startswith("bash scripts/setup.sh && ") and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"demo_command='{demo}'" in ci
    assert f"test_command='{tests}'" in ci
    assert (ROOT / "examples" / "demo.py").exists()


def test_constraints_pin_every_test_dependency():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not an exact pin"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    pyproject = (ROOT / "pyproject.toml").read_text()
    wanted = re.findall(r'"([A-Za-z0-9_.-]+)\s*(?:[<>=!~][^"]*)?"',
                        pyproject.split("dependencies = [", 1)[1].split("[project.scripts]", 1)[0])
    for name in wanted:
        assert re.sub(r"[-_.]+", "-", name).lower() in pins, f"{name} is not pinned in constraints.txt"
    for tool in ("setuptools", "cffi", "wheel"):
        assert tool in pins
