"""What the tests share besides fixtures: the real data's files, small datasets made from them,
the commands' folder, a served model, real HTTP requests, unwritable folders, snapshots."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the console scripts of the environment under test
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def write_small_config(path: Path, data_root: Path) -> Path:
    """A config for a short, real run on a small slice of MNIST in `data_root`."""
    path.write_text(
        "seed: 7\ndevice: cpu\n"
        f"data: {{name: mnist, root: '{data_root}', verify: false, download: false, "
        "val_size: 500}\n"
        "model: {hidden: 32}\n"
        "train: {epochs: 2, batch_size: 50, lr: 0.003, lr_schedule: cosine}\n"
        "checkpoint: {keep: 1}\n"
    )
    return path


def real_data_dir(env: str, default: Path, how: str) -> Path:
    folder = Path(os.environ.get(env, default))
    missing = [name for name in MNIST_FILES if not (folder / name).exists()]
    if missing:
        pytest.fail(f"real data missing in {folder} ({', '.join(missing)}): {how}", pytrace=False)
    return folder


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def billion_laughs(levels: int = 9) -> str:
    """A YAML "billion laughs": each level a list of 9 aliases of the one before, so a few
    hundred bytes stand for 9**levels values."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    lines.append(f"seed: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


@functools.lru_cache(maxsize=1)
def real_subset(mnist_dir: Path, train: int, test: int):
    from mnist_gluon.data import DATASETS, read_split

    spec = DATASETS["mnist"]
    train_split = read_split(spec, "train", mnist_dir, download=False)
    test_split = read_split(spec, "test", mnist_dir, download=False)
    return (train_split.images[:train], train_split.labels[:train].astype(np.uint8),
            test_split.images[:test], test_split.labels[:test].astype(np.uint8))


def write_dataset(folder: Path, arrays, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(MNIST_FILES, arrays, strict=True):
        write_idx(folder / (name if gz else name.removesuffix(".gz")), array)
    return folder


def as_drawn(image: np.ndarray) -> np.ndarray:
    """An MNIST digit the way a person hands it over: dark ink on light paper, 8 times
    larger, off-centre on a larger sheet of another shape, in colour."""
    big = 255 - np.kron(image, np.ones((8, 8)))
    ink = np.stack([big, big * 0.85, big * 0.7], axis=-1)
    sheet = np.full((330, 300, 3), 250.0)
    sheet[20 : 20 + big.shape[0], 70 : 70 + big.shape[1]] = ink
    return sheet.astype(np.uint8)


@contextlib.contextmanager
def serving(checkpoint: Path, *args: str):
    """A real `mnist-serve` process on a free port of 127.0.0.1: yields (base URL, the
    process, a list that collects its stderr lines). Stopped with SIGTERM afterwards."""
    process = subprocess.Popen(
        [str(BIN / "mnist-serve"), "--checkpoint", str(checkpoint),
         "--port", "0", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()
    match = re.search(r" on (http://\S+/) ", first)
    if match is None:
        process.kill()
        pytest.fail(f"mnist-serve did not start: {first}{process.stderr.read()}")
    log = [first]
    drain = threading.Thread(target=lambda: log.extend(process.stderr), daemon=True)
    drain.start()
    try:
        yield match.group(1), process, log
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        drain.join(timeout=5)


def fetch(url: str, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One real HTTP request: (status, headers named in lower case, body), error statuses
    included."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, lower(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, lower(error.headers), error.read()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that keeps its request log to itself."""

    def log_message(self, format, *args):  # noqa: A002 - the name is the base class's
        pass


def lower(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def multipart(field: str, filename: str, content: bytes,
              content_type: str = "image/png") -> tuple[bytes, str]:
    """A multipart/form-data body with one file, as a browser or curl -F sends it."""
    boundary = "mnist-gluon-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n").encode()
    body += content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@contextlib.contextmanager
def unwritable(folder: Path):
    """Make `folder` unwritable even for root (immutable attribute), then restore it."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    if shutil.which("chattr") is None:
        pytest.fail("running as root, the unwritable-folder tests need chattr (e2fsprogs)")
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@contextlib.contextmanager
def tiny_disk(mount: Path, size: str):
    """A real file system of `size` (tmpfs, e.g. "160k") mounted at `mount`: a disk that fills."""
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def snapshot(folder: Path, exclude: set[str] = frozenset()) -> dict[str, bytes]:
    """Every file under `folder` (but those named in `exclude`) with its bytes, to prove
    nothing changed. A run folder's `.lock` is left out: each run that opens the folder
    writes its PID there."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in exclude and p.name != ".lock"}


def stop_at(step: int, signum: int = signal.SIGTERM):
    """A `stop_signal` for run_training that reports `signum` once the loop has finished
    `step` steps: a Ctrl-C or SIGTERM at an exact step."""
    calls = [0]

    def stop_signal():
        calls[0] += 1
        return signum if calls[0] >= step else None

    return stop_signal


def stopped_then_resumed(config_path: Path, overrides: list[str], run_dir: Path,
                         step: int) -> Path:
    """`run_dir` after a run of the config is stopped at `step` and then finished by
    `mnist-train --resume`."""
    from mnist_gluon.cli import run, train_command
    from mnist_gluon.config import load_config
    from mnist_gluon.errors import Stopped
    from mnist_gluon.training.run import run_training

    with pytest.raises(Stopped):
        run_training(load_config(config_path, overrides), run_dir, quiet=True,
                     stop_signal=stop_at(step))
    assert run(train_command, ["--resume", str(run_dir), "--quiet"]) == 0
    return run_dir


def without_module(module: str, folder: Path, command: str,
                   args: list) -> subprocess.CompletedProcess:
    """Run `cli.run(cli.<command>, args)` in a fresh interpreter where importing `module`
    fails, as it does where its extra is not installed."""
    blocker = folder / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / f"{module}.py").write_text(f"raise ImportError('{module} is not installed')\n")
    probe = ("import sys; from mnist_gluon import cli; "
             f"sys.exit(cli.run(cli.{command}, {[str(a) for a in args]!r}))")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={"PYTHONPATH": str(blocker), "PATH": ""})


def check_install_hint(text: str) -> None:
    """The install command quoted in `text` is one that works where it was printed: pip, run by
    this Python, resolves it (a dry run) without moving numpy."""
    start = text.index(f"{sys.executable} -m pip install")
    command = shlex.split(text[start:].splitlines()[0].removesuffix(" (see mnist-sweep --help)"))
    done = subprocess.run([*command[:4], "--dry-run", *command[4:]], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    would = [line for line in done.stdout.splitlines() if line.startswith("Would install")]
    assert not any("numpy" in line for line in would), would


# A LeNet small enough for a test's run: 4 and 8 channels, 32 hidden units.
LENET = ("model.kind=lenet", "model.channels=[4, 8]", "model.hidden=32")


def saved_step(run_dir: Path) -> int:
    """The step of the run's newest checkpoint; 0 before the first."""
    try:
        return json.loads((run_dir / "last.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def kill_once_saved(process: subprocess.Popen, run_dir: Path, step: int,
                    delay: float = 0.0) -> None:
    """SIGKILL `process` (an mnist-train into `run_dir`) `delay` seconds after it has saved
    `step`, and wait for it to end."""
    try:
        deadline = time.monotonic() + 60
        while saved_step(run_dir) < step and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.communicate()
