"""Talk to a Jupyter server's pyckpt endpoints (the command line and the magics
use this; the standard library only, so `pyckpt jupyter` starts fast).

The server is the one given (URL and token) or found as `jupyter server list`
finds it: the jpserver-PID.json files of the Jupyter runtime directory whose
server process is alive.
"""

from __future__ import annotations

import glob
import json
import os
import urllib.error
import urllib.parse
import urllib.request

from .. import errors


class JupyterError(errors.PyckptError):
    """The Jupyter server could not be reached, refused the request, or pyckpt in it
    refused the save or restore (its message then says why: the server's error
    class and exit code are kept).

    Attributes:
        url: the server's URL.
        status: the HTTP status (None when no answer came).
        error: the name of the server's error class (None if not pyckpt's).
    """

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None,
                 error: str | None = None, exit_code: int = 1):
        self.url = url
        self.status = status
        self.error = error
        self.exit_code = exit_code
        super().__init__(message)


def runtime_dir() -> str:
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        return jupyter_runtime_dir()
    except ImportError:
        base = os.environ.get("JUPYTER_DATA_DIR") or os.path.join(
            os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "jupyter")
        return os.environ.get("JUPYTER_RUNTIME_DIR") or os.path.join(base, "runtime")


def running_servers() -> list[dict]:
    """The servers of this user's runtime directory whose process is alive."""
    found = []
    for name in sorted(glob.glob(os.path.join(runtime_dir(), "jpserver-*.json"))):
        try:
            with open(name) as f:
                info = json.load(f)
            pid = int(info["pid"])
            os.kill(pid, 0)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(info.get("url"), str):
            found.append(info)
    return found


class Server:
    """A Jupyter server: its URL and token."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 prefer_pid: int | None = None):
        if url is None:
            servers = running_servers()
            if prefer_pid is not None:
                servers = [s for s in servers if s.get("pid") == prefer_pid] or servers
            if not servers:
                raise JupyterError(f"no running Jupyter server found (none in {runtime_dir()}, as "
                                   "`jupyter server list` looks): start one, or give --server URL "
                                   "--token TOKEN")
            if len(servers) > 1:
                urls = ", ".join(s["url"] for s in servers)
                raise JupyterError(f"{len(servers)} Jupyter servers run ({urls}): say which with "
                                   "--server URL (and --token TOKEN)")
            url, token = servers[0]["url"], token if token is not None else servers[0].get("token")
        if token is None:
            token = os.environ.get("JUPYTER_TOKEN", "")
        self.url = url if url.endswith("/") else url + "/"
        self.token = token or ""
        parsed = urllib.parse.urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise JupyterError(f"--server wants the server's URL, http://HOST:PORT/ (as `jupyter "
                               f"server list` shows it), not {url!r}", url=url)

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 600):
        url = urllib.parse.urljoin(self.url, path)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            try:
                reply = json.loads(e.read() or b"{}")
            except ValueError:
                reply = {}
            raise self._refusal(e.code, reply, path) from None
        except (urllib.error.URLError, OSError) as e:
            why = getattr(e, "reason", e)
            raise JupyterError(f"no Jupyter server answers at {self.url} ({why}): is it running? "
                               "`jupyter server list` shows the running ones (give --server URL)",
                               url=self.url) from e

    def _refusal(self, code: int, reply: dict, path: str) -> JupyterError:
        message = reply.get("message") if isinstance(reply, dict) else None
        if reply.get("error") if isinstance(reply, dict) else None:  # pyckpt's own refusal
            return JupyterError(message, url=self.url, status=code, error=reply["error"],
                                exit_code=int(reply.get("exit_code") or 1))
        if code in (401, 403):
            given = "the token given" if self.token else "no token"
            return JupyterError(f"the Jupyter server at {self.url} refused {given} (HTTP {code}): "
                                "give the server's token with --token TOKEN (`jupyter server list` "
                                "shows it)", url=self.url, status=code)
        if code == 404:
            return JupyterError(f"the Jupyter server at {self.url} has no pyckpt endpoint "
                                f"({path}: HTTP 404): enable the extension (`jupyter server "
                                "extension enable pyckpt.jupyter`) and restart the server",
                                url=self.url, status=code)
        return JupyterError(f"the Jupyter server at {self.url} answered HTTP {code} to {path}: "
                            f"{message or 'no reason given'}", url=self.url, status=code)

    def save(self, kernel_id: str, path: str, *, stop: bool = False, timeout: float | None = None,
             parent: str | bool | None = None):
        body = {"path": path, "stop": stop}
        if timeout is not None:
            body["timeout"] = timeout
        if parent is not None:
            body["parent"] = parent
        return self.call("POST", f"api/pyckpt/kernels/{urllib.parse.quote(kernel_id, safe='')}/save",
                         body)

    def restore(self, path: str, *, replace: bool = False, allow_changed_files: bool = False,
                new_id: bool = False, lazy: bool | None = None):
        body = {"path": path, "replace": replace, "allow_changed_files": allow_changed_files,
                "new_id": new_id}
        if lazy is not None:
            body["lazy"] = lazy
        return self.call("POST", "api/pyckpt/restore", body)

    def images(self):
        return self.call("GET", "api/pyckpt/images")
