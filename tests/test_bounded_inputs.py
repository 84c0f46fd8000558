"""Small inputs that could cost unbounded memory or time, and values that pass a type check
but not MXNet: each, through the real command, is one line on stderr and exit status 2, with
peak memory well under 300 MB and nothing left on disk."""

import gzip
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from support import BIN, billion_laughs, idx_bytes

PEAK_LIMIT_MB = 300


# Started from a small Python process: a child forked straight from pytest would count
# pytest's own pages (MXNet loaded, hundreds of MB) in its peak until it execs.
MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def run_bounded(name, *args, timeout=120, cwd=None):
    """(exit status, stderr, peak resident MB) of one real process."""
    try:
        done = subprocess.run([sys.executable, "-c", MEASURE, str(BIN / name), *map(str, args)],
                              capture_output=True, text=True, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} {' '.join(map(str, args))[:200]} ran past {timeout} s")
    code, peak_kb = done.stdout.split()
    return int(code), done.stderr, int(peak_kb) / 1024


def refused(name, *args, says, cwd=None):
    """Assert the command refuses its input as the contract says; returns the line."""
    code, stderr, peak = run_bounded(name, *args, cwd=cwd)
    lines = stderr.strip().splitlines()
    assert code == 2, stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert says in lines[0], lines[0]
    assert peak < PEAK_LIMIT_MB, f"peak {peak:.0f} MB"
    return lines[0]


# --- configs and --set values ----------------------------------------------------------------

def test_a_config_of_nested_aliases_is_refused_before_it_is_expanded(tmp_path):
    config = tmp_path / "laughs.yaml"
    config.write_text(billion_laughs())
    assert config.stat().st_size < 1000
    refused("mnist-train", "--config", config, "--out", tmp_path / "run",
            says="once its aliases are expanded")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value, says", [
    ("9" * 5000, "more than 4,300 digits"),
    ("[" * 20000 + "]" * 20000, "a value may have up to 10,000"),
    ("[" * 4000 + "]" * 4000, "nested more than 32 levels deep"),
    ("1e39", "float32"),
])
def test_a_huge_or_deep_set_value_is_one_line(tmp_path, value, says):
    refused("mnist-train", "--out", tmp_path / "run", "--set", f"seed={value}"
            if not value.startswith("1e") else f"train.weight_decay={value}", says=says)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, says", [
    ("train.weight_decay=1e39", "MXNet computes in float32"),
    ("train.lr=1e39", "MXNet computes in float32"),
    ("train.clip_gradient=" + "9" * 400, "MXNet computes in float32"),
    ("device=cpu:2147483648", "ids go from 0 to 63"),
    ("model.classes=3000000", "model.classes is 3000000; it must be in [2, 1000]"),
    ("train.batch_size=2147483648", "train.batch_size"),
    ("checkpoint.every_steps=9999999999", "checkpoint.every_steps is 9999999999"),
])
def test_values_mxnet_cannot_hold_are_refused_before_any_folder_is_made(tmp_path, setting, says):
    refused("mnist-train", "--out", tmp_path / "run", "--set", setting, says=says)
    assert not (tmp_path / "run").exists()


def test_a_device_file_as_config_is_refused_without_reading_it(tmp_path):
    refused("mnist-train", "--config", "/dev/zero", "--out", tmp_path / "run",
            says="config file /dev/zero is a device, not a file")


def test_a_fifo_as_config_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    refused("mnist-train", "--config", fifo, "--out", tmp_path / "run", says="is a FIFO")


def test_a_config_larger_than_a_megabyte_is_refused(tmp_path):
    config = tmp_path / "big.yaml"
    config.write_text("# " + "x" * (1 << 20) + "\nseed: 1\n")
    refused("mnist-train", "--config", config, "--out", tmp_path / "run",
            says="more than the 1,048,576 bytes")


# --- data files, images and checkpoints --------------------------------------------------------

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def test_a_gzip_idx_of_many_members_inflates_only_to_what_its_header_promises(model, tmp_path):
    """3 MB of concatenated gzip members, each of 64 MB of zeros, behind a header of 10 images:
    it inflated without limit, to a MemoryError."""
    bomb = tmp_path / "digits-idx3-ubyte.gz"
    member = gzip.compress(b"\0" * (64 << 20), 9)
    with open(bomb, "wb") as out:
        out.write(gzip.compress(idx_bytes(np.zeros((10, 28, 28), np.uint8))))
        for _ in range(45):
            out.write(member)
    assert bomb.stat().st_size < 3 << 20
    refused("mnist-predict", "--checkpoint", model, bomb,
            says="inflates to more than the 7,856 bytes its IDX header promises")


def test_a_png_whose_second_header_claims_a_huge_image_is_refused(model, tmp_path):
    """The first IHDR said 1 x 1, the second 12000 x 12000: the size check read the first,
    Pillow decoded by the second (1.25 GB)."""
    header = lambda w, h: png_chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big")  # noqa: E731
                                    + bytes([8, 0, 0, 0, 0]))
    pixels = zlib.compress((b"\0" * 12001) * 12000, 9)
    png = tmp_path / "two-headers.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + header(1, 1) + header(12000, 12000)
                    + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b""))
    assert png.stat().st_size < 1 << 20
    refused("mnist-predict", "--checkpoint", model, png, says="second IHDR chunk")


def test_an_idx_header_claiming_terabytes_is_refused_from_the_header(model, tmp_path):
    claim = tmp_path / "claims-idx3-ubyte"
    claim.write_bytes(bytes([0, 0, 8, 3]) + (2**31).to_bytes(4, "big")
                      + (28).to_bytes(4, "big") * 2 + bytes(784))
    refused("mnist-predict", "--checkpoint", model, claim,
            says="header claims 2147483648x28x28 items")


def test_a_fifo_as_checkpoint_is_refused_without_waiting_for_a_writer(tmp_path, model):
    fifo = tmp_path / "best.params"
    os.mkfifo(fifo)
    image = tmp_path / "digit.npy"
    np.save(image, np.zeros((28, 28)))
    for command in ("mnist-predict", "mnist-eval", "mnist-export"):
        args = {"mnist-predict": [image], "mnist-eval": [], "mnist-export": [
            "--out", tmp_path / "export"]}[command]
        refused(command, "--checkpoint", fifo, *args,
                says=f"checkpoint {fifo} is a FIFO, not a file")


def test_a_fifo_as_sidecar_is_refused_without_waiting_for_a_writer(tmp_path, model):
    params = tmp_path / "best.params"
    params.write_bytes(model.read_bytes())
    os.mkfifo(tmp_path / "best.json")
    refused("mnist-eval", "--checkpoint", params, says="best.json is a FIFO, not a file")


def test_a_fifo_as_the_sidecar_of_a_run_to_resume_is_refused_without_waiting(tmp_path,
                                                                             small_config):
    run_dir = tmp_path / "run"
    assert subprocess.run([str(BIN / "mnist-train"), "--config", str(small_config), "--out",
                           str(run_dir), "--quiet", "--set", "train.epochs=1"],
                          capture_output=True).returncode == 0
    (run_dir / "last.json").unlink()
    os.mkfifo(run_dir / "last.json")
    for name in ("best", "epoch-0001"):  # no other checkpoint to fall back on
        for suffix in (".params", ".states", ".json"):
            (run_dir / f"{name}{suffix}").unlink(missing_ok=True)
    refused("mnist-train", "--resume", run_dir, says="last.json is a FIFO, not a file")


def test_a_fifo_as_the_optimizer_state_of_a_run_to_resume_is_not_read(tmp_path, small_config):
    """Its checksum was read from the FIFO: the resume waited for a writer forever."""
    run_dir = tmp_path / "run"
    assert subprocess.run([str(BIN / "mnist-train"), "--config", str(small_config), "--out",
                           str(run_dir), "--quiet", "--set", "train.epochs=1"],
                          capture_output=True).returncode == 0
    for name in ("best", "epoch-0001"):  # no other checkpoint to fall back on
        for suffix in (".params", ".states", ".json"):
            (run_dir / f"{name}{suffix}").unlink(missing_ok=True)
    (run_dir / "last.states").unlink()
    os.mkfifo(run_dir / "last.states")
    refused("mnist-train", "--resume", run_dir, "--set", "train.epochs=2",
            says="last.states is missing or does not match last.params's sidecar")


# --- files mnist-predict reads: sizes and decoding work, bounded ------------------------------

def npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()


def test_an_npy_header_declaring_petabytes_is_refused_from_the_header(model, tmp_path):
    huge = tmp_path / "huge.npy"
    huge.write_bytes(npy_header((1_000_000, 1_000_000, 784)))
    refused("mnist-predict", model, huge, says="declares an array of shape (1000000, 1000000, "
                                               "784)")


@pytest.mark.parametrize("name, content", [
    ("sparse.png", b"\x89PNG\r\n\x1a\n"),
    ("honest.npy", npy_header((2_000_000, 784), "|u1")),
])
def test_a_sparse_file_of_gigabytes_is_refused_by_its_size_not_read(model, tmp_path, name,
                                                                   content):
    big = tmp_path / name
    with open(big, "wb") as handle:
        handle.write(content)
        handle.truncate(3 << 30 if name.endswith(".png") else 2_000_000 * 784 + len(content))
    refused("mnist-predict", model, big, says="bytes, more than the 6")


def test_a_jpeg_of_thousands_of_scans_is_refused_before_decoding(model, tmp_path):
    """A 300 kB progressive JPEG of 30,000 empty scans cost about a minute of decoding."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (64, 64), 200).save(buffer, "JPEG", progressive=True)
    jpeg = buffer.getvalue()
    last_scan = jpeg.rindex(b"\xff\xda")
    scans = jpeg[:-2] + jpeg[last_scan:-2] * 30_000 + b"\xff\xd9"
    (tmp_path / "scans.jpg").write_bytes(scans)
    line = refused("mnist-predict", model, tmp_path / "scans.jpg", says="is a JPEG of ")
    assert "scans, more than the 100 an encoder writes; send it saved again" in line
