"""Small hostile inputs, through the real commands and a real mnist-serve: for each, the exit
status (or HTTP status), how many lines it printed on stderr, its peak memory and its time; for
the server, how long /healthz took while the bad request was being handled.

    python scripts/hostile_inputs.py --checkpoint runs/base/best.params \
        --data-root ../shared/data/mnist [--fashion-root /usr/share/datasets/fashion-mnist]

tests/test_bounded_inputs.py asserts the same cases (one line, exit 2, under 300 MB); this
prints the figures.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent
# A small parent, so that the peak is the command's own and not pages shared with this one.
MEASURE = """
import resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - started)
"""


def measure(name: str, *args) -> None:
    done = subprocess.run([sys.executable, "-c", MEASURE, str(BIN / name), *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    code, peak_kb, seconds = done.stdout.split()
    lines = done.stderr.strip().splitlines()
    shown = " ".join(map(str, args))
    print(f"| `{name} {shown[:60]}{'...' if len(shown) > 60 else ''}` | {code} | {len(lines)} "
          f"| {int(peak_kb) / 1024:.0f} MB | {float(seconds):.1f} s | "
          f"{lines[-1][:120] if lines else ''} |")


def idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big")
                                                      for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def write_inputs(folder: Path) -> dict[str, Path]:
    laughs = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 9)]
    (folder / "laughs.yaml").write_text("\n".join([*laughs, "seed: *a8"]) + "\n")
    member = gzip.compress(bytes(64 << 20), 9)
    (folder / "bomb-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx(np.zeros((10, 28, 28)))) + member * 45)
    header = lambda w, h: png_chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big")  # noqa: E731
                                    + bytes([8, 0, 0, 0, 0]))
    (folder / "two-headers.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + header(1, 1) + header(12000, 12000)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 12001 * 12000, 9)) + png_chunk(b"IEND", b""))
    Image.new("RGBA", (100, 100), (0, 0, 0, 0)).save(folder / "transparent.png")
    os.mkfifo(folder / "fifo.params")
    for name in ("laughs.yaml", "bomb-idx3-ubyte.gz", "two-headers.png"):
        print(f"{name}: {(folder / name).stat().st_size:,} bytes")
    return {path.stem: path for path in folder.iterdir()}


def commands(args, files: dict[str, Path], folder: Path) -> None:
    print("\n| command | exit | stderr lines | peak | time | last line |")
    print("|---|---|---|---|---|---|")
    out = folder / "run"
    measure("mnist-train", "--config", files["laughs"], "--out", out)
    measure("mnist-train", "--out", out, "--set", "seed=" + "9" * 5000)
    measure("mnist-train", "--out", out, "--set", "seed=" + "[" * 4000 + "]" * 4000)
    measure("mnist-train", "--out", out, "--set", "seed=" + "[" * 20000 + "]" * 20000)
    measure("mnist-train", "--config", "/dev/zero", "--out", out)
    measure("mnist-train", "--out", out, "--set", "device=cpu:2147483648")
    measure("mnist-train", "--out", out, "--set", "model.classes=3000000")
    measure("mnist-train", "--out", out, "--data-root", args.data_root, "--set",
            "train.weight_decay=1e39")
    print(f"\n{out} exists afterwards: {out.exists()}\n")
    measure("mnist-predict", "--checkpoint", args.checkpoint, files["bomb-idx3-ubyte"])
    measure("mnist-predict", "--checkpoint", args.checkpoint, files["two-headers"])
    measure("mnist-predict", "--checkpoint", files["fifo"], files["transparent"])
    measure("mnist-predict", "--checkpoint", args.checkpoint, files["transparent"])
    measure("mnist-sweep", "--config", "base", "--out", folder / "sweep", "--range",
            "train.lr=0.01:0.1", "--random", "1", "--sampler", "tpe")
    if args.fashion_root:
        measure("mnist-eval", "--checkpoint", args.checkpoint, "--dataset", "fashion-mnist",
                "--data-root", args.fashion_root)


def server(args) -> None:
    process = subprocess.Popen([str(BIN / "mnist-serve"), "--checkpoint", args.checkpoint,
                                "--port", "0"], stderr=subprocess.PIPE, text=True,
                               stdout=subprocess.DEVNULL)
    url = re.search(r" on (http://\S+/) ", process.stderr.readline()).group(1)
    try:
        print("\n| body | status | message | /healthz while it is handled | the request |")
        print("|---|---|---|---|---|")
        bodies = {"2 MB of escaped quotes": b'{"pixels": "' + b'\\"' * 2**20,
                  "a ragged pixels row": json.dumps({"pixels": [[[0, 0]] + [0] * 783]}).encode(),
                  "true and false as pixels": json.dumps(
                      {"pixels": [[True] * 392 + [0] * 392]}).encode()}
        for name, body in bodies.items():
            answer: dict = {}
            request = threading.Thread(target=lambda a=answer, b=body: a.update(post(url, b)))
            started = time.perf_counter()
            request.start()
            waits = [healthz(url) for _ in range(5)]
            request.join()
            took = time.perf_counter() - started
            print(f"| {name} | {answer['status']} | {answer['error'][:70]} | at most "
                  f"{max(waits):.1f} ms | {took * 1000:.0f} ms |")
        host, port = re.search(r"http://([\d.]+):(\d+)/", url).groups()
        silent = [socket.create_connection((host, int(port))) for _ in range(300)]
        started, closed = time.monotonic(), 0
        for sock in silent:
            sock.settimeout(60)
            try:
                while sock.recv(4096):
                    pass
                closed += 1
            except OSError:
                pass
        print(f"\n300 connections that send nothing: {closed} closed by the server, the last "
              f"after {time.monotonic() - started:.1f} s (--header-timeout 10 s)")
    finally:
        process.terminate()
        process.wait(timeout=30)


def post(url: str, body: bytes) -> dict:
    request = urllib.request.Request(url + "v1/predict", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return {"status": response.status, "error": ""}
    except urllib.error.HTTPError as error:
        return {"status": error.code, "error": json.loads(error.read())["error"]}


def healthz(url: str) -> float:
    started = time.perf_counter()
    urllib.request.urlopen(url + "healthz", timeout=60).read()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--fashion-root", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        files = write_inputs(Path(folder))
        commands(args, files, Path(folder))
    server(args)


if __name__ == "__main__":
    main()
