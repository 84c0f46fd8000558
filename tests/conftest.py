"""Fixtures: the real MNIST and Fashion-MNIST files, a small slice of MNIST and a config for
it, a trained model, a local HTTP server and a closed port."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

# The tests call the commands in this process too, and MXNet reads its OpenMP threads once: it
# is imported here on the count mnist-train chooses, whichever test runs first. The commands
# the tests start as processes choose for themselves.
if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    import mnist_gluon.mxnet_compat  # noqa: F401

    del os.environ["OMP_NUM_THREADS"]

from support import (  # noqa: E402
    REPO,
    QuietHandler,
    real_data_dir,
    real_subset,
    write_dataset,
    write_small_config,
)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The original MNIST files, byte-exact (../shared/data/mnist beside the repository)."""
    return real_data_dir("MNIST_GLUON_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist",
                         "set MNIST_GLUON_MNIST_DIR to a folder with the four MNIST .gz files")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    return real_data_dir("MNIST_GLUON_FASHION_DIR", Path("/usr/share/datasets/fashion-mnist"),
                         "apt-get install -y dataset-fashion-mnist")


@pytest.fixture(scope="session")
def small_mnist(mnist_dir, tmp_path_factory) -> Path:
    """The first 3,000 training and 1,000 test images of real MNIST as uncompressed IDX files
    (so `data.verify: false`): a run on it takes a second or two."""
    folder = tmp_path_factory.mktemp("small-mnist")
    return write_dataset(folder, real_subset(mnist_dir, 3000, 1000))


@pytest.fixture
def small_config(small_mnist, tmp_path) -> Path:
    """A config for a short, real run on `small_mnist`."""
    return write_small_config(tmp_path / "small.yaml", small_mnist)


@pytest.fixture(scope="session")
def test_set(mnist_dir):
    """MNIST's 10,000 test images and labels."""
    from mnist_gluon.data import DATASETS, read_split

    return read_split(DATASETS["mnist"], "test", mnist_dir, download=False)


@pytest.fixture(scope="session")
def model(mnist_dir, tmp_path_factory) -> Path:
    """A real model: the document's MLP, two epochs on all of MNIST (about 96%)."""
    from mnist_gluon.cli import run, train_command

    out = tmp_path_factory.mktemp("model") / "run"
    assert run(train_command, [
        "--config", str(REPO / "configs/base.yaml"), "--out", str(out),
        "--data-root", str(mnist_dir), "--set", "train.epochs=2", "--set",
        "train.warmup_epochs=0", "--set", "device=cpu", "--quiet"]) == 0
    return out / "best.params"


@pytest.fixture(scope="session")
def lenet_model(mnist_dir, tmp_path_factory) -> Path:
    """A real LeNet (8 and 16 channels, 64 hidden units), one epoch on all of MNIST (about
    97%)."""
    from mnist_gluon.cli import run, train_command

    out = tmp_path_factory.mktemp("lenet") / "run"
    assert run(train_command, [
        "--config", str(REPO / "configs/base.yaml"), "--out", str(out),
        "--data-root", str(mnist_dir), "--set", "train.epochs=1", "--set", "device=cpu",
        "--set", "model.kind=lenet",
        "--set", "model.channels=[8,16]", "--set", "model.hidden=64", "--quiet"]) == 0
    return out / "best.params"


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder; yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: what an offline mirror looks like."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"




@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server of the session's own, on a Unix socket in a fresh folder:
    yields the URL of an empty database. Debian's postgresql package provides it."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        pytest.fail("the sweep tests need PostgreSQL: apt-get install -y postgresql",
                    pytrace=False)
    bindir = bins[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="mnist-gluon-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(folder, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def pg(tool: str, *args: str) -> None:
        subprocess.run([*as_owner, str(bindir / tool), *args], check=True,
                       capture_output=True, timeout=120)

    pg("initdb", "-D", str(folder / "data"), "--auth=trust", "-U", "postgres", "--no-sync")
    pg("pg_ctl", "-D", str(folder / "data"), "-l", str(folder / "server.log"), "-w", "-o",
       f"-k {folder} -p {port} -c listen_addresses='' -c fsync=off", "start")
    try:
        pg("createdb", "-h", str(folder), "-p", str(port), "-U", "postgres", "sweeps")
        yield f"postgresql://postgres@/sweeps?host={folder}&port={port}"
    finally:
        pg("pg_ctl", "-D", str(folder / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
