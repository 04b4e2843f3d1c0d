#!/bin/bash
# Install what pyckpt needs on a fresh Debian machine: a C compiler and the
# Python headers (for the cffi helper), then pyckpt itself with its test deps.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
command -v gcc >/dev/null || need_apt+=(gcc)
python3 - <<'PY' || need_apt+=(python3-dev)
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY
if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
