"""Incremental images: an image that names its parent and keeps only what changed.

`dump(pid, dir, parent=PARENT)` writes a `ParentRecord`: the parent's path
relative to the image directory, and the parent's identity — the digest of its
records.img and the size of its pages.img, both from the parent's COMPLETE
marker — and how many images the chain holds above this one.  A memory run
the image did not store says which image of the chain holds it
(kinds/memory.py `PageRun.image`: 0 this one, 1 its parent, 2 the parent's
parent, ...).

A parent is opened as the image's own files are: from the image directory,
one path component at a time, never through a symbolic link (O_NOFOLLOW on
every component), its files regular and checked as pages.img is
(image/__init__.py).  It must be a complete image of the same owner as the
child's directory (the parent's directory and files: a restore of an image
that is not trusted runs as its owner, and must not read another's memory), with the identity the child wrote (else another image was
put at that path, or the parent changed: an ImageError naming both paths);
the chain is at most MAX_CHAIN images long, and an image met twice (a cycle)
is refused.
"""

from __future__ import annotations

import os

from .._dataclass import dataclass
from ..errors import ImageError
from .codec import record

MAX_CHAIN = 32  # images above one image (its parent, its parent's parent, ...)


@record(13, scope="image")
@dataclass
class ParentRecord:
    path: str  # the parent image's directory, relative to this image's directory
    records_xxh3: int  # the parent's identity: its COMPLETE marker's records digest...
    pages_size: int  # ... and the size of its pages.img
    depth: int  # images above this one in its chain (1: the parent has no parent)


def identity(reader) -> tuple[int, int]:
    """What a child records of `reader`'s image (see ParentRecord)."""
    return reader._expect_digest, reader.pages_size


def parent_record(reader) -> ParentRecord | None:
    found = [r for r in reader.records if isinstance(r, ParentRecord)]
    if len(found) > 1:
        raise ImageError(f"image at {reader.path}: it names {len(found)} parents", path=reader.path)
    return found[0] if found else None


def relative_path(parent, child) -> str:
    """`parent` as a path relative to `child` (both directories), through no symbolic
    link: the path a child stores and later opens component by component."""
    return os.path.relpath(os.path.realpath(parent), os.path.realpath(child))


def _walk(dfd: int, rel: str, child: os.PathLike, target: os.PathLike) -> int:
    """An O_PATH fd of the directory `rel` (relative to the directory `dfd`), reached
    one component at a time with O_NOFOLLOW: no symbolic link is followed."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if rel.startswith("/") or not parts:
        raise ImageError(f"image at {child}: its parent's path {rel!r} is not a path relative to "
                         "it (damaged image)", path=child)
    cur = os.dup(dfd)
    try:
        for part in parts:
            try:
                nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            except FileNotFoundError:
                raise ImageError(
                    f"image at {child} is incremental and its parent image {target} (written as "
                    f"{rel} relative to it) is missing: restore reads the pages it did not store "
                    "from there; put the parent image back at that path", path=child) from None
            except NotADirectoryError:
                raise ImageError(
                    f"image at {child}: its parent image {target} (written as {rel}) is not a "
                    "directory, or is reached through a symbolic link, which pyckpt does not follow "
                    "in an image; put the parent image itself at that path", path=child) from None
            except OSError as e:
                raise ImageError(f"image at {child}: cannot open its parent image {target}: "
                                 f"{e.strerror}", path=child) from None
            os.close(cur)
            cur = nxt
        return cur
    except BaseException:
        os.close(cur)
        raise


def open_chain(reader) -> list:
    """[reader, its parent's reader, ...]: every image of `reader`'s chain, each
    opened and checked (see the module docstring)."""
    try:
        return _open_chain(reader)
    except ImageError as e:
        if e.path is not None and os.fspath(e.path) != os.fspath(reader.path):
            # a link further up: say which image's chain it broke
            raise ImageError(f"image at {reader.path} (incremental) cannot be read: {e}",
                             path=reader.path) from None
        raise


def _open_chain(reader) -> list:
    from . import COMPLETE_FILE, PAGES_FILE, RECORDS_FILE, ImageReader, _open_dir

    chain = [reader]
    seen = set()
    child = reader
    dfd = os.dup(child._dfd) if child._dfd >= 0 else _open_dir(child.where)
    try:
        st = os.fstat(dfd)
        owner = st.st_uid
        seen.add((st.st_dev, st.st_ino))
        while True:
            rec = parent_record(child)
            if rec is None:
                break
            want_depth = rec.depth
            if len(chain) > MAX_CHAIN or want_depth > MAX_CHAIN or want_depth < 1:
                raise ImageError(f"image at {reader.path}: its chain of parents is longer than "
                                 f"{MAX_CHAIN} images (damaged, or a cycle)", path=reader.path)
            from pathlib import Path  # (an incremental image's: not in every command's start-up)

            target = Path(os.path.normpath(os.path.join(child.path, rec.path)))
            pfd = _walk(dfd, rec.path, child.path, target)
            os.close(dfd)
            dfd = pfd
            pst = os.fstat(dfd)
            if (pst.st_dev, pst.st_ino) in seen:
                raise ImageError(f"image at {reader.path}: its chain of parents comes back to "
                                 f"{target} (a cycle); it cannot be restored", path=reader.path)
            seen.add((pst.st_dev, pst.st_ino))
            if pst.st_uid != owner:
                raise ImageError(
                    f"image at {child.path}: its parent image {target} belongs to uid {pst.st_uid}, "
                    f"the image to uid {owner}; the images of a chain must have one owner",
                    path=child.path)
            for name in (RECORDS_FILE, PAGES_FILE, COMPLETE_FILE):
                try:
                    fst = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except OSError:
                    continue  # the reader below says what is missing
                if fst.st_uid != owner:
                    raise ImageError(
                        f"image at {child.path}: {name} of its parent image {target} belongs to uid "
                        f"{fst.st_uid}, the image to uid {owner}; the images of a chain must have one "
                        "owner", path=child.path)
            try:
                parent = ImageReader(target, dir_fd=dfd)
            except ImageError as e:
                raise ImageError(f"image at {child.path}: its parent image {target}: {e}",
                                 path=child.path) from None
            if identity(parent) != (rec.records_xxh3, rec.pages_size):
                raise ImageError(
                    f"image at {child.path}: the image at {target} (its parent, written as "
                    f"{rec.path}) is not the parent it was dumped against: another image was put "
                    "there, or it was changed; restore needs that very image at that path",
                    path=child.path)
            pdepth = parent_record(parent)
            if (pdepth.depth if pdepth else 0) != want_depth - 1:
                raise ImageError(f"image at {child.path}: its parent {target} does not have the "
                                 "chain it names (damaged image)", path=child.path)
            chain.append(parent)
            child = parent
    finally:
        os.close(dfd)
    return chain
