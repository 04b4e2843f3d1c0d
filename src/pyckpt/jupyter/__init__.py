"""Save a live Jupyter kernel with its tabs open and bring it back under the same id.

Three ways in, one mechanism (see extension.py for the steps and why):

- the Jupyter server extension `pyckpt.jupyter` (enabled on install by
  `etc/jupyter/jupyter_server_config.d/pyckpt.json`, or by
  `jupyter server extension enable pyckpt.jupyter`): REST endpoints under
  /api/pyckpt that save a kernel the server manages, list saved kernels and
  restore one through the kernel provisioner `pyckpt-provisioner`
  (provisioner.py), so the server owns the restored kernel under the same
  kernel id, ports and key;
- the command line: `pyckpt jupyter save KERNEL_ID DIR`, `pyckpt jupyter
  restore DIR`, `pyckpt jupyter list` (client.py; the server is found as
  `jupyter server list` finds it, or given with --server URL --token TOKEN);
- in the notebook: `%load_ext pyckpt`, then `%pyckpt save NAME` and
  `%pyckpt restore NAME` (magics.py), which ask the server: a kernel cannot
  dump itself.

The server runs as root (pyckpt seizes the kernel with ptrace) and dumps and
restores in its own process: the restored kernel is its child.
"""

from __future__ import annotations


def _jupyter_server_extension_points():
    return [{"module": "pyckpt.jupyter"}]


def _load_jupyter_server_extension(serverapp):
    from .extension import load

    load(serverapp)


def load_ipython_extension(ipython):
    from .magics import load

    load(ipython)
