"""A seeded mutation fuzzer over a small real image: records.img, COMPLETE and pages.img
are damaged in many ways — bit flips, truncation, extension, random bytes, and JSON
edits re-signed (record checksums and the COMPLETE digest made anew) so that the
decoders and validators are reached, not only the checksums — and every outcome of
open_image(), verify(), summary(), `pyckpt show` and check_restore() must be an
ImageError or a success; never another exception, never a hang.  Meaning-neutral
edits (key order, white space, escapes, an extra COMPLETE key, unreferenced bytes
after the pages) must still open, and a sample of them is restored: the copy must
carry on from where the original stopped.

PYCKPT_FUZZ_SEED and PYCKPT_FUZZ_N choose the seed and the number of mutations
(default: a fixed seed, 2000); PYCKPT_FUZZ_REPORT=1 prints the outcome counts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import pytest
import xxhash

import pyckpt
from pyckpt import cli
from pyckpt.image import COMPLETE_FILE, FORMAT_VERSION, MAGIC, PAGES_FILE, RECORDS_FILE

TICKER = Path(__file__).parent / "targets" / "ticker.py"
SEED = int(os.environ.get("PYCKPT_FUZZ_SEED", "20250917"))
N = int(os.environ.get("PYCKPT_FUZZ_N", "2000"))
CHECK_EVERY = int(os.environ.get("PYCKPT_FUZZ_CHECK_EVERY", "8"))  # check_restore() on every 8th
RESTORES = 8  # meaning-neutral mutations restored for real (each ~0.3 s)
CASE_TIMEOUT = 10  # seconds: a case that takes longer is a hang

_HEAD = struct.Struct("<HHI")
END = 0xFFFF


# --- the good image, taken apart ------------------------------------------------------------------

class Parts:
    """An image as the pieces a mutation edits; `write()` assembles and signs them."""

    def __init__(self, header: bytes, records: list[tuple[int, bytes]], pages: bytes,
                 complete: dict, version: int = FORMAT_VERSION):
        self.header, self.records, self.pages, self.complete = header, records, pages, complete
        self.version = version  # records.img's format version, as read

    @classmethod
    def read(cls, d: Path) -> "Parts":
        data = (d / RECORDS_FILE).read_bytes()
        assert data.startswith(MAGIC)
        version, hlen = struct.unpack_from("<II", data, len(MAGIC))
        pos = len(MAGIC) + 8
        header = data[pos: pos + hlen]
        pos += hlen + 8
        records = []
        while pos < len(data):
            t, _, n = _HEAD.unpack_from(data, pos)
            records.append((t, data[pos + 8: pos + 8 + n]))
            pos += 8 + n + 8
        assert records[-1][0] == END
        return cls(header, records[:-1], (d / PAGES_FILE).read_bytes(),
                   json.loads((d / COMPLETE_FILE).read_bytes()), version)

    def copy(self) -> "Parts":
        new = Parts(self.header, list(self.records), self.pages, dict(self.complete), self.version)
        new._values = self.values
        return new

    @property
    def values(self) -> dict:
        """key -> every scalar value it has in the records (for mixing references)."""
        if not hasattr(self, "_values"):
            self._values = {}
            for _, body in self.records:
                for path, v in _paths(json.loads(body)):
                    if path and not isinstance(v, (dict, list)):
                        self._values.setdefault(path[-1], []).append(v)
        return self._values

    def records_bytes(self, end: bytes | None = None) -> bytes:
        out = [MAGIC, struct.pack("<II", self.version, len(self.header)), self.header,
               struct.pack("<Q", xxhash.xxh3_64_intdigest(self.header))]
        end = json.dumps({"records": len(self.records)}).encode() if end is None else end
        for t, body in self.records + [(END, end)]:
            head = _HEAD.pack(t, 0, len(body))
            out += [head, body, struct.pack("<Q", xxhash.xxh3_64_intdigest(head + body))]
        return b"".join(out)


def _write(d: Path, good: Path, records: bytes | None, complete: bytes | None,
           pages: bytes | None) -> None:
    """An image at `d`: each file given, else a hard link to the good image's."""
    d.mkdir(mode=0o700)
    for name, data in ((RECORDS_FILE, records), (COMPLETE_FILE, complete), (PAGES_FILE, pages)):
        if data is None:
            os.link(good / name, d / name)
        else:
            (d / name).write_bytes(data)


def _signed(parts: Parts, records: bytes, **extra) -> bytes:
    marker = dict(parts.complete, records_xxh3=xxhash.xxh3_64_intdigest(records), **extra)
    return json.dumps(marker).encode()


# --- mutations --------------------------------------------------------------------------------------

INTERESTING = [0, 1, -1, 2, 7, 4095, 4096, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
               2**64, -2**63, -2**63 - 1, 10**30, 10**400, 1.5, -0.0, 1e308, float("inf"),
               float("nan"), "", "x", "/", "/etc/shadow", "\x00", "a\x00b", "\ud800", "\udcff",
               "\x1b[2J", "x" * 5000, None, True, False, [], {}, [1, 2, 3], {"a": 1}, [[[]]]]
REFERENCE = re.compile(r"(^|_)(id|fd|pid|ppid|tid|ino|dev|peer|offset)$")  # keys naming another object
DEEP = "@@DEEP@@"  # replaced in the JSON text by a deeply nested array


def _paths(value, path=()):
    """Every (path, value) of a JSON value, the root included."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


def _set(root, path, value):
    if not path:
        return value
    node = root
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return root


def _near(rng: random.Random, v):
    """A plausible wrong value: close to the right one, same type where it can be."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return rng.choice([v + 1, v - 1, v + 4096, v - 4096, v * 2, v // 2, -v, v ^ (1 << rng.randrange(64)),
                           v + 2**32, 0, v + 1000, 999])
    if isinstance(v, float):
        return rng.choice([v + 1, -v, v * 1e6])
    if isinstance(v, str):
        if not v:
            return "x"
        i = rng.randrange(len(v))
        return rng.choice([v[:i], v + v, v[:i] + chr(rng.randrange(1, 0x2FF)) + v[i + 1:], v.upper(),
                           "/nonexistent" + v])
    if isinstance(v, list):
        if not v:
            return [0]
        return rng.choice([v[:-1], v + v[-1:], list(reversed(v)), v[1:]])
    return v


def _edit_json(rng: random.Random, body: bytes, elsewhere: dict | None = None) -> tuple[bytes, str]:
    """Change one value, key or item of a JSON text; the JSON stays valid (mostly).
    `elsewhere`: key -> the values it has in other records (ids that refer to
    another object, or to none)."""
    value = json.loads(body)
    paths = list(_paths(value))
    refs = [(p, v) for p, v in paths if p and isinstance(p[-1], str) and REFERENCE.search(p[-1])]
    path, old = rng.choice(refs if refs and rng.random() < 0.3 else paths)
    op = rng.random()
    if op < 0.15 and elsewhere and path and path[-1] in elsewhere:
        new = rng.choice(elsewhere[path[-1]])
        value, what = _set(value, path, new), f"value of another record {str(new)[:20]!r}"
    elif op < 0.35:
        value, what = _set(value, path, _near(rng, old)), "near"
    elif op < 0.65:
        new = rng.choice(INTERESTING)
        value, what = _set(value, path, new), f"value {str(new)[:20]!r}"
    elif op < 0.72 and path:
        parent = value
        for k in path[:-1]:
            parent = parent[k]
        del parent[path[-1]]
        what = "delete"
    elif op < 0.78 and isinstance(old, dict):
        old[rng.choice(["x", "pid", "fd", ""])] = rng.choice(INTERESTING[:12])
        what = "add key"
    elif op < 0.84:
        value, what = _set(value, path, DEEP), "deep"
    elif op < 0.90 and isinstance(old, dict) and len(old) >= 2:
        a, b = rng.sample(list(old), 2)
        old[a], old[b] = old[b], old[a]
        what = "swap values"
    else:
        value, what = _set(value, path, _near(rng, old)), "near"
    text = json.dumps(value, allow_nan=True)
    depth = rng.choice([50, 900, 5000, 100000])
    text = text.replace(json.dumps(DEEP), "[" * depth + "]" * depth)
    return text.encode(), f"json {what} at {'/'.join(map(str, path))[:60]}"


def _raw(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Bytes damaged at random: flips, truncation, extension, random bytes, a cut."""
    n = len(data)
    op = rng.randrange(6)
    if op == 0:
        b = bytearray(data)
        for _ in range(rng.choice([1, 1, 2, 8])):
            if b:
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b), "bit flip"
    if op == 1:
        return data[: rng.randrange(n + 1)], "truncate"
    if op == 2:
        return data + rng.randbytes(rng.choice([1, 7, 4096, 70000])), "extend"
    if op == 3:
        i = rng.randrange(n + 1)
        return data[:i] + rng.randbytes(rng.randrange(1, 64)) + data[i + 64:], "random bytes"
    if op == 4:
        i = rng.randrange(n + 1)
        return data[:i] + data[i + rng.randrange(1, 200):], "cut"
    return rng.randbytes(rng.choice([0, 8, 100, n])), "all random"


def _neutral_json(rng: random.Random, body: bytes) -> bytes:
    """The same JSON value in another spelling: key order, white space, \\u escapes."""
    value = json.loads(body)

    def shuffle(v):
        if isinstance(v, dict):
            items = list(v.items())
            rng.shuffle(items)
            return {k: shuffle(x) for k, x in items}
        if isinstance(v, list):
            return [shuffle(x) for x in v]
        return v

    text = json.dumps(shuffle(value), indent=rng.choice([None, 1, "\t"]),
                      separators=rng.choice([(",", ":"), (" ,  ", " :  ")]), ensure_ascii=True)
    # escape a few plain letters inside strings ("a" -> "\u0061"): same value
    return re.sub(r'(?<=")([a-z])', lambda m: m.group(1) if rng.random() < 0.5
                  else "\\u%04x" % ord(m.group(1)), text).encode()


def mutate(rng: random.Random, parts: Parts) -> tuple[dict, str, bool]:
    """({file: new bytes}, what, meaning-neutral?)"""
    p = parts.copy()
    kind = rng.choices(["raw-records", "raw-records-signed", "json", "json-header", "json-end",
                        "record-list", "raw-complete", "json-complete", "raw-pages", "pages-signed",
                        "neutral"], weights=[6, 6, 30, 4, 3, 10, 5, 8, 5, 4, 8])[0]
    good_records = p.records_bytes()
    if kind in ("raw-records", "raw-records-signed"):
        data, what = _raw(rng, good_records)
        complete = _signed(p, data) if kind == "raw-records-signed" else None
        return {RECORDS_FILE: data, COMPLETE_FILE: complete}, f"{kind}: {what}", False
    if kind == "json":  # a type first, then a record of it: the few fds weigh as much as the many vmas
        t = rng.choice(sorted({t for t, _ in p.records}))
        i = rng.choice([i for i, (u, _) in enumerate(p.records) if u == t])
        t, body = p.records[i]
        new, what = _edit_json(rng, body, p.values)
        p.records[i] = (t, new)
        data = p.records_bytes()
        return {RECORDS_FILE: data, COMPLETE_FILE: _signed(p, data)}, f"record #{i} (type {t}): {what}", False
    if kind == "json-header":
        p.header, what = _edit_json(rng, p.header)
        data = p.records_bytes()
        return {RECORDS_FILE: data, COMPLETE_FILE: _signed(p, data)}, f"header: {what}", False
    if kind == "json-end":
        end, what = _edit_json(rng, json.dumps({"records": len(p.records)}).encode())
        data = p.records_bytes(end)
        return {RECORDS_FILE: data, COMPLETE_FILE: _signed(p, data)}, f"end record: {what}", False
    if kind == "record-list":
        op = rng.randrange(5)
        i, j = rng.randrange(len(p.records)), rng.randrange(len(p.records))
        if op == 0:
            p.records.insert(j, p.records[i])
            what = f"record #{i} copied to #{j}"
        elif op == 1:
            del p.records[i]
            what = f"record #{i} removed"
        elif op == 2:
            p.records[i], p.records[j] = p.records[j], p.records[i]
            what = f"records #{i} and #{j} swapped"
        elif op == 3:
            t = rng.choice(sorted({t for t, _ in p.records}) + [0, 999, END])
            p.records[i] = (t, p.records[i][1])
            what = f"record #{i} given type {t}"
        else:
            p.records.insert(j, p.records.pop(i))
            what = f"record #{i} moved to #{j}"
        data = p.records_bytes()
        return {RECORDS_FILE: data, COMPLETE_FILE: _signed(p, data)}, f"record list: {what}", False
    if kind == "raw-complete":
        data, what = _raw(rng, json.dumps(p.complete).encode())
        return {COMPLETE_FILE: data}, f"COMPLETE: {what}", False
    if kind == "json-complete":
        data, what = _edit_json(rng, json.dumps(p.complete).encode())
        return {COMPLETE_FILE: data}, f"COMPLETE: {what}", False
    if kind == "raw-pages":
        data, what = _raw(rng, p.pages)
        return {PAGES_FILE: data}, f"pages.img: {what}", False
    if kind == "pages-signed":  # another size, and COMPLETE says so
        data, what = _raw(rng, p.pages)
        return ({PAGES_FILE: data, COMPLETE_FILE: _signed(p, good_records, pages_size=len(data))},
                f"pages.img, size signed: {what}", False)
    # meaning-neutral: the image must still open, verify and restore the same
    op = rng.randrange(4)
    if op == 0:
        p.records = [(t, _neutral_json(rng, b)) for t, b in p.records]
        p.header = _neutral_json(rng, p.header)
        data = p.records_bytes()
        return {RECORDS_FILE: data, COMPLETE_FILE: _signed(p, data)}, "neutral: JSON respelt", True
    if op == 1:
        data = json.dumps(dict(p.complete, comment="x", **{"future": [1]})).encode()
        return {COMPLETE_FILE: data}, "neutral: extra COMPLETE keys", True
    if op == 2:
        data = p.pages + rng.randbytes(rng.choice([1, 4096, 10000]))
        return ({PAGES_FILE: data, COMPLETE_FILE: _signed(p, good_records, pages_size=len(data))},
                "neutral: bytes after the pages", True)
    text = json.dumps(p.complete, indent=2).encode() + b"\n"
    return {COMPLETE_FILE: text}, "neutral: COMPLETE respelt", True


# --- running the readers ------------------------------------------------------------------------

class Hang(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float):
    """A case that takes longer raises Hang (SIGALRM interrupts a blocking read too)."""
    def on_alarm(sig, frame):
        raise Hang(f"no outcome within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def read_all(d: Path, *, show: bool, check: bool) -> str:
    """Every reader, in order; returns "ok" or "ImageError@<step>"; anything else raises."""
    step = "open"
    try:
        image = pyckpt.open_image(d)
        step = "verify"
        image.verify(progress=False)
        step = "summary"
        info = image.summary()
        json.dumps(info)  # what `show --json` prints
        if show:
            step = "show"
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = cli.main(["--no-progress", "show", str(d)])
            assert code == 0, out.getvalue()[-500:]
        if check:
            step = "check_restore"
            try:
                image.check_restore(new_pidns=True, progress=False)
            except pyckpt.ImageError:
                raise
            except pyckpt.PyckptError as e:  # what is wrong here and now (an fd above our limit)
                return f"{type(e).__name__}@check_restore"
        return "ok"
    except pyckpt.ImageError as e:
        assert e.path == str(d), f"ImageError without the image's path: {e.path!r}: {e}"
        return f"ImageError@{step}"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small real image of a ticker (killed at the dump, reaped: its PID is free),
    and the last tick it printed."""
    base = tmp_path_factory.mktemp("fuzz")
    log = base / "ticker.log"
    with open(log, "wb") as out:
        p = subprocess.Popen([sys.executable, str(TICKER)], stdin=subprocess.DEVNULL, stdout=out,
                             stderr=out, start_new_session=True)
    try:
        deadline_ = time.monotonic() + 30
        while "tick 2\n" not in log.read_text():
            assert time.monotonic() < deadline_, log.read_text()
            time.sleep(0.01)
        pyckpt.dump(p.pid, base / "img", kill=True)
    finally:
        p.kill()
        p.wait()
    last = int(re.findall(r"^tick (\d+)$", log.read_text(), re.M)[-1])
    return base / "img", last


def test_fuzz_the_image_readers(good, tmp_path, spawn):
    img, last = good
    parts = Parts.read(img)
    rng = random.Random(SEED)
    outcomes: Counter = Counter()
    failures: list[tuple[str, str]] = []  # (kind, what happened)
    neutral_dirs: list[tuple[Path, str]] = []
    t0 = time.monotonic()
    for n in range(N):
        files, what, neutral = mutate(rng, parts)
        d = tmp_path / f"m{n}"
        _write(d, img, files.get(RECORDS_FILE), files.get(COMPLETE_FILE), files.get(PAGES_FILE))
        try:
            with deadline(CASE_TIMEOUT):
                outcome = read_all(d, show=n % 4 == 0, check=n % CHECK_EVERY == 0)
        except Exception as e:  # noqa: BLE001 - what this test is for
            failures.append((type(e).__name__, f"#{n} ({what}, kept at {d}): {type(e).__name__}: "
                             f"{str(e)[:200]}\n" + "".join(traceback.format_exception(e)[-3:])))
            outcomes[type(e).__name__] += 1
            continue  # the image is kept for a look
        outcomes[outcome] += 1
        if neutral:
            if outcome != "ok":
                failures.append(("neutral", f"#{n} ({what}): a meaning-neutral edit gave {outcome}"))
            elif len(neutral_dirs) < RESTORES:
                neutral_dirs.append((d, what))
                continue
        shutil.rmtree(d)
    elapsed = time.monotonic() - t0
    # the meaning-neutral edits restore: the copy carries on from the last tick
    for i, (d, what) in enumerate(neutral_dirs):
        out = tmp_path / f"copy{i}.log"
        with deadline(30):
            proc = pyckpt.restore(d, new_pidns=True, fds={1: str(out)}, progress=False)
        spawn.track(proc.ppid())  # the namespace's init, our child: ends the copy with it
        end = time.monotonic() + 10
        while not re.search(rf"^tick {last + 2}$", out.read_text() if out.exists() else "", re.M):
            assert time.monotonic() < end, f"the copy of {what} did not tick on: {out.read_text()[-200:]}"
            time.sleep(0.01)
        ticks = [int(x) for x in re.findall(r"^tick (\d+)$", out.read_text(), re.M)]
        assert ticks[:2] == [last + 1, last + 2], (what, ticks[:5])
        proc.kill()
        outcomes["restored"] += 1
    if os.environ.get("PYCKPT_FUZZ_REPORT"):
        print(f"\n{N} mutations (seed {SEED}) in {elapsed:.1f} s; outcomes:")
        for k, v in sorted(outcomes.items()):
            print(f"  {k}: {v}")
    if failures:  # one example of each kind of failure first
        kinds = Counter(kind for kind, _ in failures)
        firsts = {}
        for kind, text in failures:
            firsts.setdefault(kind, text)
        raise AssertionError(f"{len(failures)} of {N} mutations failed (seed {SEED}): {dict(kinds)}\n"
                             + "\n".join(list(firsts.values())[:20]))
    assert outcomes["ok"] and sum(v for k, v in outcomes.items() if k.startswith("ImageError")) > N // 2
    assert outcomes["restored"] == len(neutral_dirs) > 0
