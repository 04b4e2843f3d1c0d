#!/bin/bash
# Set up pyckpt on a fresh Debian machine, as root: a C compiler, the Python
# headers and venv (for the cffi helper and the virtual environment), then a
# virtual environment in .venv/ holding pyckpt and its test dependencies at the
# versions pinned in constraints.txt. Works with Debian's own python3 (which
# refuses system-wide pip installs, PEP 668) and with a separate install.
# Run it again at any time: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
need_apt=()
command -v gcc >/dev/null || need_apt+=(gcc)
"$PY" - <<'PY' || need_apt+=(python3-dev)
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY
# Debian ships venv's pip bootstrap (ensurepip) in a separate package.
"$PY" -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
# Real programs the tests save and restore (each test starts its own instance).
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || need_apt+=(redis-server)
command -v tmux >/dev/null || need_apt+=(tmux)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v javac >/dev/null || ls /usr/lib/jvm/*/bin/javac >/dev/null 2>&1 || need_apt+=(openjdk-17-jdk-headless)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "setup.sh: missing ${need_apt[*]}; install them (Debian: apt-get install ${need_apt[*]}) and run again" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
# A venv made by another Python (or a broken one) is made again.
if ! .venv/bin/python -c 'import sys; sys.exit(sys.base_prefix != sys.argv[1])' \
        "$("$PY" -c 'import sys; print(sys.base_prefix)')" 2>/dev/null; then
    rm -rf .venv
    "$PY" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt)
# The build tools first, pinned, so the editable build below needs no network
# for an isolated build environment and cannot pick up a new setuptools.
"${pip[@]}" setuptools wheel cffi
# pip itself, pinned too: the `pyckpt` command it writes is then the console script of
# pip >= 25, which starts without `import re` (pip 23's, the one a Python 3.11 venv
# comes with, imports re and enum: ~5 ms of every command, bench/startup.py).
"${pip[@]}" pip==26.3
"${pip[@]}" --no-build-isolation -e '.[test]'
# An editable install leaves out data files: enable the Jupyter server extension
# pyckpt.jupyter in the venv as a wheel install of pyckpt does (PREFIX/etc/jupyter/...).
install -D -m 644 etc/jupyter/jupyter_server_config.d/pyckpt.json \
    .venv/etc/jupyter/jupyter_server_config.d/pyckpt.json
