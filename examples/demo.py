"""pyckpt demo: start a real process, dump it, kill it, restore it, watch it carry on.

Run as root:  python3 examples/demo.py
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

import pyckpt

# The process to save: it builds some state, then counts, printing as it goes.
TARGET = r"""
import os, time
squares = {i: i * i for i in range(100_000)}     # state it will need after restore
blob = bytearray(os.urandom(1 << 20)) * 16       # 16 MiB of data
check = sum(blob[::4096])
n = 0
while True:
    n += 1
    ok = squares[n % 100_000] == (n % 100_000) ** 2 and sum(blob[::4096]) == check
    print(f"pid {os.getpid()} tick {n} state {'intact' if ok else 'BROKEN'}", flush=True)
    time.sleep(0.2)
"""


def tail(log: Path, k: int = 3) -> list[str]:
    return log.read_text().splitlines()[-k:]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="pyckpt-demo-"))
    log, image = work / "target.log", work / "image"
    with open(log, "w") as out:
        target = subprocess.Popen([sys.executable, "-c", TARGET], stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    pid = target.pid
    restored = None
    try:
        while len(log.read_text().splitlines()) < 5:
            time.sleep(0.1)
        print(f"1. started process {pid}; its last lines:")
        print("   " + "\n   ".join(tail(log)))

        t = time.perf_counter()
        img = pyckpt.dump(pid, image, kill=True)  # CLI: pyckpt dump PID DIR --kill
        st = img.dump_stats
        print(f"2. dumped it to {image} in {time.perf_counter() - t:.3f} s "
              f"({st.pages_bytes / 2**20:.1f} MiB of memory, frozen {st.freeze * 1000:.0f} ms), "
              "then killed it")
        target.wait()
        last_before = tail(log, 1)[0]
        print(f"3. process {pid} is gone (exists: {os.path.exists(f'/proc/{pid}')}); "
              f"its last line was: {last_before}")

        time.sleep(1.0)
        t = time.perf_counter()
        restored = pyckpt.restore(image)  # CLI: pyckpt restore DIR
        print(f"4. restored it in {time.perf_counter() - t:.3f} s as PID {restored.pid} "
              f"(same PID: {restored.pid == pid})")
        deadline = time.monotonic() + 10  # a second of its life, or more on a busy machine
        time.sleep(1.0)
        while True:
            lines = log.read_text().splitlines()
            after = lines[lines.index(last_before) + 1:]
            if len(after) >= 5 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        print("5. it carries on where it stopped:")
        print("   " + "\n   ".join(after[:5]))
        carried_on = (restored.pid == pid and len(after) >= 3
                      and all("intact" in a for a in after)
                      and after[0].split()[3] == str(int(last_before.split()[3]) + 1))
        print("demo " + ("succeeded: the restored process continued with its state intact"
                         if carried_on else "FAILED"))
        return 0 if carried_on else 1
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
        if restored is not None:
            try:
                restored.kill()  # psutil checks it is still the process it restored
                os.waitpid(restored.pid, 0)
            except (psutil.NoSuchProcess, ChildProcessError):
                pass
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    sys.exit(main())
