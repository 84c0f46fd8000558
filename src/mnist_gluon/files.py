"""Writing files so that a crash never leaves half of one under its real name; checksums."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import OutputError

NAME_MAX, PATH_MAX = 255, 4095  # bytes, as Linux's file systems take them
# What this process is writing under a temporary name: taken away if a signal ends it midway.
HALF_MADE: set[Path] = set()


def remove_half_made() -> None:
    """Remove every temporary file and staging folder this process is still writing."""
    for path in list(HALF_MADE):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def check_path_names(path: Path, what: str) -> Path:
    """Refuse, before any work, a path that no file system here takes (a name over 255 bytes, a
    path over 4,095) or that MXNet cannot open (a name that is not UTF-8: MXNet encodes it so,
    and failed only when it came to save, after a whole run). `what` names it in the message:
    "output folder", "--plot folder", "checkpoint"."""
    raw = os.fsencode(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        shown = raw.decode("utf-8", "backslashreplace")
        raise OutputError(f"{what} {shown} has a name that is not UTF-8, which MXNet cannot "
                          "open; rename it, or choose another") from None
    long = [part for part in path.parts if len(os.fsencode(part)) > NAME_MAX]
    if long:
        raise OutputError(f"{what} {path}: the name {long[0][:40]}... has "
                          f"{len(os.fsencode(long[0]))} bytes, over the {NAME_MAX} a file system "
                          "takes; choose a shorter one")
    if len(raw) > PATH_MAX:
        raise OutputError(f"{what} {str(path)[:60]}... is {len(raw):,} bytes long, over the "
                          f"{PATH_MAX:,} a path may have; choose a shorter one")
    return path


def writable_folder(folder: Path, what: str,
                    remedy: str = "choose a folder you can write") -> Path:
    """`folder`, created if needed and proven writable before any work is done for it; the
    refusal names it as `what` and ends with `remedy`."""
    check_path_names(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputError(f"{what} {folder} is not writable ({error.strerror}); {remedy}"
                          ) from None
    return folder


def stage(path: Path, write: Callable[[Path], None]) -> Path:
    """Run `write` on a temporary name beside `path` and fsync it; the caller commits it.
    A write that fails because the disk is full is an OutputError that says so."""
    temporary = temporary_for(path)
    HALF_MADE.add(temporary)
    try:
        write(temporary)
        sync(temporary)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        HALF_MADE.discard(temporary)
        # MXNet reports a short write as "FileStream.Write incomplete", not as ENOSPC.
        if isinstance(error, Exception) and disk_full(path.parent):
            raise OutputError(f"cannot write {path}: the disk holding {path.parent} is full; "
                              "free some space and run the command again") from None
        raise
    return temporary


def sync(path: Path) -> None:
    """Make the written file `path` durable."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def temporary_for(path: Path) -> Path:
    """Where `path` is written before it is renamed into place: `.NAME.tmp-PID` beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def disk_full(folder: Path, margin: int = 1 << 20) -> bool:
    """Whether the file system holding `folder` has less than `margin` bytes left."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < margin


def commit(staged: list[tuple[Path, Path]]) -> None:
    """Rename each (temporary, path) into place, then make the renames durable."""
    for temporary, path in staged:
        os.replace(temporary, path)
    for directory in {path.parent for _, path in staged}:
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


@contextlib.contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A hidden folder inside `out` for writing several files whose final names only
    `commit` gives them; removed afterwards, with whatever a failure left in it. A folder
    that cannot be written, or a disk that fills up, is an OutputError."""
    try:
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    except OSError as error:
        raise OutputError(f"cannot write into {out} ({error.strerror}); pass --out DIR "
                          "somewhere you can write") from None
    HALF_MADE.add(staging)
    try:
        yield staging
    except Exception:
        if disk_full(out):
            raise OutputError(f"cannot write into {out}: the disk holding it is full; free "
                              "some space and run the command again") from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        HALF_MADE.discard(staging)


def commit_files(pairs: list[tuple[Path, Path]]) -> None:
    """fsync each written (temporary, path) pair, then rename them into place in order."""
    for temporary, _ in pairs:
        sync(temporary)
    commit(pairs)


def link_or_copy(source: Path, target: Path) -> bool:
    """Hard-link `source` to `target`, or copy it where the file system has no hard links;
    whether it was a link."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
        return False
    return True


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` so that it holds either its old content or the whole new content, never
    part of it: a temporary file, fsynced, renamed into place."""
    temporary = stage(path, write)
    try:
        commit([(temporary, path)])
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(text))


NOT_A_FILE = "not a regular file"  # what sha256_of gives a FIFO or a device: no digest matches


def sha256_of(path: Path) -> str:
    """The file's SHA-256 in hex; NOT_A_FILE for a FIFO, a device or a socket, which are not
    read (a FIFO named like a checkpoint's .states would hang the read)."""
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return NOT_A_FILE
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# mnist-export --format compressed's file (compression.mnc): its first bytes, and its suffix.
COMPRESSED_MAGIC = b"\x89MNC\r\n\x1a\n"  # like PNG's: a text-mode copy shows at once
COMPRESSED_SUFFIX = ".mnc"


def is_compressed(path: Path) -> bool:
    """Whether `path` is meant as a compressed model: named .mnc, or beginning as one does."""
    if path.suffix == COMPRESSED_SUFFIX:
        return True
    if not path.is_file():  # a FIFO would block the open below
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(len(COMPRESSED_MAGIC)) == COMPRESSED_MAGIC
    except OSError:
        return False
