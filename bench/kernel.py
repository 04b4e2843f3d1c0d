"""An idle Jupyter kernel dumped and restored by the `pyckpt` command, the API and CRIU.

Issue 14, items 3 and 6: "a kernel dump <= CRIU's". One ipykernel is started by
hand (`python -m ipykernel_launcher -f CONNECTION`, its own session, no
terminal, no server), given a little state by a cell (a marker string and
`--state-mib` MiB of bytes), and then:

- dump, kernel left running: `pyckpt --no-progress dump PID DIR`, `pyckpt.dump(pid,
  dir)` in this process (pyckpt already imported) and, with `--criu PATH`, `criu
  dump -t PID -D DIR --leave-running --tcp-established --network-lock skip` (an
  idle ipykernel holds a TCP connection to itself, which CRIU refuses without
  `--tcp-established`; `--network-lock skip` because this machine has no
  iptables/nft for CRIU's lock). The contestants alternate, R rounds each after
  an untimed one.
- restore: the running kernel is SIGKILLed and reaped (untimed), then the last
  image of one contestant is restored: `pyckpt --no-progress restore
  --allow-changed-files DIR`, `pyckpt.restore(dir, allow_changed_files=True)`,
  `criu restore -D DIR --tcp-established -d`. The kernel keeps its history in
  memory (`--HistoryManager.hist_file=:memory:`): IPython's history database
  grows with the cells run since a dump, and CRIU refuses a file whose size
  changed ("has bad size"), which failed some rounds. The restored
  kernel must answer a cell (over new client connections) with the state's
  digest and the marker; it is then the kernel the next restore kills. Also R
  rounds, alternating.

Commands are timed whole (start to reaped), with a bytecode cache as an
installed command has one. The script is a child subreaper, so the restored
kernels that `pyckpt restore` and `criu restore -d` leave behind become its
children; it signals only the kernel it started and those restored copies, by
PID. The work directory is removed at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
STATE = ("import hashlib\n"
         "pyckpt_marker = 'bench-{token}'\n"
         "pyckpt_state = bytes(range(256)) * (4096 * {mib})\n")
CHECK = "import hashlib; print(hashlib.sha256(pyckpt_state).hexdigest(), pyckpt_marker)"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Bench:
    def __init__(self, args, work: Path):
        import pyckpt  # noqa: F401  (the API contestant runs warm, as a library user's does)

        self.args = args
        self.work = work
        script = Path(sys.executable).with_name("pyckpt")
        self.pyckpt = [str(script)] if script.exists() else [sys.executable, "-m", "pyckpt"]
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        self.kernel_env = {k: v for k, v in os.environ.items() if not k.startswith("JPY_")}
        self.conn = work / "kernel.json"
        ports = free_ports(5)
        self.conn.write_text(json.dumps({
            "shell_port": ports[0], "iopub_port": ports[1], "stdin_port": ports[2],
            "control_port": ports[3], "hb_port": ports[4], "ip": "127.0.0.1",
            "key": os.urandom(16).hex(), "transport": "tcp", "signature_scheme": "hmac-sha256",
            "kernel_name": ""}))
        self.token = os.urandom(4).hex()
        self.samples: dict[str, list[float]] = {}
        self.pid = 0
        self.want = ""

    # -- the kernel ---------------------------------------------------------
    def start_kernel(self) -> None:
        with open(self.work / "kernel.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "ipykernel_launcher", "-f", str(self.conn),
                                     "--HistoryManager.hist_file=:memory:"],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, env=self.kernel_env)
        self.pid = proc.pid
        self.cell(STATE.format(token=self.token, mib=self.args.state_mib), timeout=60)
        self.want = self.cell(CHECK)

    def cell(self, code: str, timeout: float = 20) -> str:
        """Run `code` on the kernel over fresh connections, which are closed again (a
        dump then sees no connection to this script); returns its printed text."""
        import jupyter_client

        client = jupyter_client.BlockingKernelClient(connection_file=str(self.conn))
        client.load_connection_file()
        client.start_channels()
        out: list[str] = []

        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        try:
            client.wait_for_ready(timeout=timeout)
            reply = client.execute_interactive(code, timeout=timeout, output_hook=hook)
        finally:
            client.stop_channels()
            client.context.destroy(linger=0)
        if reply["content"]["status"] != "ok":
            raise SystemExit(f"kernel {self.pid}: the cell failed: {reply['content']}")
        return "".join(out).strip()

    def end(self, pid: int) -> None:
        """SIGKILL and reap a kernel of ours (started here, or restored: our child, as
        we are a subreaper)."""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    # -- contestants --------------------------------------------------------
    def timed(self, name: str, argv: list[str]) -> str:
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, env=self.env, stdin=subprocess.DEVNULL)
        took = time.perf_counter() - t0
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip()
            if "-o" in argv and "-D" in argv:  # CRIU says why in its log, in the image directory
                log = Path(argv[argv.index("-D") + 1]) / argv[argv.index("-o") + 1]
                errors = [line for line in log.read_text(errors="replace").splitlines()
                          if "Error" in line] if log.is_file() else []
                said += f"\n{log} (its errors):\n" + "\n".join(errors[-10:])
            raise SystemExit(f"{name}: {' '.join(argv)} exited {done.returncode}: {said[-3000:]}")
        self.samples.setdefault(name, []).append(took)
        return done.stdout.decode()

    def image(self, who: str, fresh: bool) -> Path:
        img = self.work / f"img-{who}"
        if fresh:
            shutil.rmtree(img, ignore_errors=True)
            if who == "criu":
                img.mkdir()
        return img

    def dump(self, who: str) -> None:
        img = self.image(who, fresh=True)
        if who == "command":
            self.timed("pyckpt command: dump", [*self.pyckpt, "--no-progress", "dump", str(self.pid), str(img)])
        elif who == "api":
            import pyckpt

            t0 = time.perf_counter()
            pyckpt.dump(self.pid, img)
            self.samples.setdefault("pyckpt API: dump", []).append(time.perf_counter() - t0)
        else:
            self.timed("criu: dump", [self.args.criu, "dump", "-t", str(self.pid), "-D", str(img),
                                      "--leave-running", "--tcp-established", "--network-lock", "skip",
                                      "-o", "dump.log"])

    def restore(self, who: str) -> None:
        self.end(self.pid)
        img = self.image(who, fresh=False)
        if who == "command":
            out = self.timed("pyckpt command: restore", [*self.pyckpt, "--no-progress", "restore",
                                                                 "--allow-changed-files", str(img)])
            self.pid = int(out.split()[0])
        elif who == "api":
            import pyckpt

            t0 = time.perf_counter()
            proc = pyckpt.restore(img, allow_changed_files=True)
            self.samples.setdefault("pyckpt API: restore", []).append(time.perf_counter() - t0)
            self.pid = proc.pid
        else:
            self.timed("criu: restore", [self.args.criu, "restore", "-D", str(img), "--tcp-established",
                                         "-d", "-o", "restore.log"])
        # (first line: a restore of an older state makes IPython say it moves its history
        # to a new session, its line numbers being taken in the database)
        got = self.cell(CHECK).splitlines()[0]
        if got != self.want:
            raise SystemExit(f"{who}: the restored kernel {self.pid} answered {got!r}, not {self.want!r}")

    def run(self) -> None:
        who = ["command", "api"] + (["criu"] if self.args.criu else [])
        self.start_kernel()
        try:
            for step in (self.dump, self.restore):
                for w in who:  # untimed round
                    step(w)
                op = ": dump" if step == self.dump else ": restore"
                for name in [k for k in self.samples if k.endswith(op)]:
                    del self.samples[name]
                for i in range(self.args.repeat):
                    order = who[i % len(who):] + who[:i % len(who)]
                    if i % 2:
                        order.reverse()
                    for w in order:
                        if step == self.dump:
                            self.dump(w)
                        else:
                            self.restore(w)
                if step == self.dump:
                    self.sizes = {w: sum(f.stat().st_size for f in self.image(w, False).rglob("*")
                                         if f.is_file() and not f.is_symlink()) / 2**20 for w in who}
        finally:
            self.end(self.pid)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="timed rounds of each (default 7)")
    ap.add_argument("--state-mib", type=int, default=0,
                    help="MiB of bytes the kernel holds beside its own heap (default 0: an idle kernel)")
    ap.add_argument("--criu", metavar="PATH", help="a criu binary to compare with")
    ap.add_argument("--json", metavar="FILE", help="write every sample and the table as JSON")
    ap.add_argument("--tmp", default=None, help="where the work directory goes (default /tmp)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (restore gives the process its PID back)")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    load0 = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="pyckpt-kernel-", dir=args.tmp))
    try:
        bench = Bench(args, work)
        bench.run()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()
    print(f"idle ipykernel (+{args.state_mib} MiB), {args.repeat} rounds; load {load0[0]:.2f} before, "
          f"{load1[0]:.2f} after; image MiB: "
          + ", ".join(f"{w} {s:.1f}" for w, s in bench.sizes.items()))
    print(f"{'':<26} {'median':>9} {'best':>9} {'worst':>9}   CRIU / this")
    rows = {}
    for name, xs in bench.samples.items():
        rows[name] = {"median_ms": statistics.median(xs) * 1e3, "best_ms": min(xs) * 1e3,
                      "worst_ms": max(xs) * 1e3, "runs": len(xs)}
    for name, r in rows.items():
        op = name.split(": ")[1]
        ref = rows.get(f"criu: {op}")
        ratio = f"{ref['median_ms'] / r['median_ms']:.2f}x" if ref and not name.startswith("criu") else ""
        print(f"{name:<26} {r['median_ms']:>6.1f} ms {r['best_ms']:>6.1f} ms {r['worst_ms']:>6.1f} ms   {ratio}")
    if not args.criu:
        print("CRIU: not measured (--criu PATH)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "load": [load0, load1],
                                               "samples_s": bench.samples, "rows": rows,
                                               "image_mib": bench.sizes}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
