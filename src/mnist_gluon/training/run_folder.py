"""Run folders: refused when they hold another run, created and proven writable, locked while
a run uses them, and swept of what a killed writer left."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..checkpoint import PREVIOUS, RUN_FILES
from ..errors import Interrupted, OutputError, Stopped
from ..files import writable_folder


def check_run_dir(out: Path, force: bool) -> None:
    """Refuse, before any work, a run folder that is a file or holds an earlier run."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} is a file, not a folder; pass --out DIR")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not force:
        raise OutputError(
            f"{out} already holds a run ({', '.join(existing)}); pass --resume {out} to "
            "continue it, --force to overwrite it, or --out DIR for a new folder"
        )


LOCK = ".lock"


def lock_run_dir(run_dir: Path, command: str = "mnist-train") -> int | None:
    """Mark `run_dir` in use for as long as this process runs (an advisory flock on
    `.lock`, which holds the PID); refuse a folder another live run holds. The returned file
    descriptor keeps the lock; None when the folder does not exist yet."""
    import fcntl

    if not run_dir.is_dir():
        return None
    refuse_links(run_dir, command)
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError:
        return None  # an unwritable folder is reported when the run writes to it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise OutputError(f"{run_dir} is in use by a running {command} (PID {holder}); wait "
                          "for it to end, stop it, or pass --out DIR for a new run") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def refuse_links(folder: Path, command: str = "mnist-train") -> None:
    """Refuse a folder where a file the command writes or reads is a symbolic link: the
    command would write through it, outside the folder (a `.lock` linked to a user's file
    was emptied and given a PID)."""
    for path in folder.iterdir():
        if path.is_symlink() and (is_run_file(path) or path.name.startswith(".")
                                  or path.suffix in (".json", ".yaml", ".jsonl", ".db",
                                                     ".csv", ".log")):
            raise OutputError(f"{path} is a symbolic link; {command} writes only real files in "
                              "its folder: remove the link, or pass --out DIR")


def append_line(path: Path, line: str) -> None:
    """Append `line` to `path` in a run folder, never through a symbolic link."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise OutputError(f"cannot write {path} ({error.strerror}); remove what is there, or "
                          "pass --out DIR") from None
    with os.fdopen(fd, "a") as handle:
        handle.write(line)


class FolderLock:
    """A run folder's lock (`lock_run_dir`), taken once the folder exists, held while the run
    lasts, released on every way out."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.fd = run_dir, None

    def take(self) -> None:
        if self.fd is None:
            self.fd = lock_run_dir(self.run_dir)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def sweep_stale_temporaries(run_dir: Path) -> None:
    """Remove the temporaries (`.NAME.tmp-PID`) that a process killed while writing left
    behind; a live process's are kept."""
    for path in run_dir.glob(".*.tmp-*"):
        pid = path.name.rpartition("-")[2]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def prepare_run_dir(out: Path, force: bool) -> None:
    """Create the run folder, proving it writable; with `force`, clear an earlier run's files."""
    check_run_dir(out, force)
    writable_folder(out, "output folder", "pass --out DIR somewhere you can write")
    if force:
        for path in out.iterdir():
            if is_run_file(path):
                path.unlink()


def is_run_file(path: Path) -> bool:
    """Files that mnist-train writes into a run folder (and --force replaces)."""
    if path.name in ("config.yaml", "metrics.jsonl", "curves.png"):
        return True
    if path.name.startswith("events.out.tfevents."):  # TensorBoard's
        return True
    checkpoint_name = path.stem in ("last", "best", PREVIOUS) or path.stem.startswith("epoch-")
    return checkpoint_name and path.suffix in (".params", ".states", ".json", ".average")



@contextlib.contextmanager
def unmade_on_failure(run_dir: Path, fresh: bool) -> Iterator[None]:
    """A new run that fails before its first checkpoint (a value MXNet refuses, data that
    turns out wrong) takes away what it wrote, so the same command can simply be run again.
    A stop (Ctrl-C, a signal) or a full disk keeps the folder: `--resume` starts it again from
    the beginning."""
    try:
        yield
    except (Stopped, Interrupted, KeyboardInterrupt, OutputError):
        raise  # an OutputError (a full disk) says to free space and --resume
    except BaseException:
        if fresh and run_dir.is_dir() and not any(run_dir.glob("*.params")):
            for path in run_dir.iterdir():
                if is_run_file(path) or path.name == LOCK:
                    path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if nothing else is there
        raise


def is_fresh(run_dir: Path) -> bool:
    """Whether `run_dir` does not exist yet or is empty: a run made there is all ours."""
    return not run_dir.exists() or run_dir.is_dir() and not any(run_dir.iterdir())
