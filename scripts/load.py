#!/usr/bin/env python
"""A bounded load run against mnist-serve on loopback: requests/s and latency percentiles.

    pip install -e ".[serve]"
    python scripts/load.py --checkpoint runs/base/best.params --json load.json

Starts `mnist-serve` once per server setting (one request per forward pass, then its default
dynamic micro-batching), sends each the same requests from CONCURRENCY clients that each keep one
HTTP/1.1 connection open and send their next request when the last is answered, and checks
every answer: a status other than 200, or a label other than the server's answer for that
image alone, counts as an error. The client runs on the same machine and shares its cores.
Settings alternate round by round, so the ratio holds while the machine's speed drifts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def png(image: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG, as a browser's canvas.toBlob would send it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))
    height, width = image.shape
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    rows = b"".join(b"\x00" + row.tobytes() for row in image.astype(np.uint8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def payloads(data_root: str, count: int, kind: str) -> list[tuple[str, bytes]]:
    """(content type, body) for `count` MNIST test digits: drawn 280 x 280 dark-on-light PNGs
    like the page's, or JSON rows of 784 pixels."""
    from mnist_gluon.data import DATASETS, read_split

    images = read_split(DATASETS["mnist"], "test", data_root, download=False).images[:count]
    if kind == "json":
        return [("application/json", json.dumps({"pixels": [image.reshape(-1).tolist()]}
                                                ).encode()) for image in images]
    drawn = [255 - np.kron(image, np.ones((10, 10), np.uint8)) for image in images]
    return [("image/png", png(image)) for image in drawn]


async def client(host: str, port: int, jobs: asyncio.Queue, bodies, latencies, answers):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            try:
                index = jobs.get_nowait()
            except asyncio.QueueEmpty:
                return
            content_type, body = bodies[index % len(bodies)]
            started = time.perf_counter()
            writer.write(f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                         f"{content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                         + body)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])
            answer = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            answers.append((index, status, answer))
    finally:
        writer.close()


async def load(url: str, bodies, requests: int, concurrency: int) -> dict:
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    jobs: asyncio.Queue = asyncio.Queue()
    for index in range(requests):
        jobs.put_nowait(index)
    latencies, answers = [], []
    started = time.perf_counter()
    results = await asyncio.gather(*(client(host, int(port), jobs, bodies, latencies, answers)
                                     for _ in range(concurrency)), return_exceptions=True)
    seconds = time.perf_counter() - started
    failed_clients = [repr(r) for r in results if isinstance(r, BaseException)]
    return {"seconds": seconds, "latencies": latencies, "answers": answers,
            "failed_clients": failed_clients}


def start_server(checkpoint: str, args: list[str]) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([str(Path(sys.executable).parent / "mnist-serve"),
                                "--checkpoint", checkpoint, "--port", "0", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    match = re.search(r" on (http://\S+/) ", line)
    if match is None:
        process.kill()
        sys.exit(f"load.py: mnist-serve did not start: {line}{process.stderr.read()}")
    return process, match.group(1)


def expected_labels(url: str, bodies) -> list[int]:
    import urllib.request

    labels = []
    for content_type, body in bodies:
        request = urllib.request.Request(url + "v1/predict", data=body,
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=60) as response:
            labels.append(json.loads(response.read())["predictions"][0]["label"])
    return labels


def figures(run: dict, expected: list[int]) -> dict:
    errors = len(run["failed_clients"])
    for index, status, answer in run["answers"]:
        if status != 200 or json.loads(answer)["predictions"][0]["label"] != expected[
                index % len(expected)]:
            errors += 1
    ms = sorted(1000 * t for t in run["latencies"])
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return {"requests": len(run["answers"]), "errors": errors,
            "requests_per_second": len(run["answers"]) / run["seconds"],
            "p50_ms": pick(0.50), "p90_ms": pick(0.90), "p99_ms": pick(0.99), "max_ms": ms[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the .params file to serve")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared/data/mnist"),
                        help="folder with MNIST's test files (the images sent)")
    parser.add_argument("--requests", type=int, default=5000, help="per round and setting")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", default="png,json", help="png: drawn 280x280 images; "
                        "json: one row of 784 pixels per request")
    parser.add_argument("--batching", default="--max-batch 16 --max-wait-ms 0",
                        help="the micro-batching setting (mnist-serve's default) compared with "
                             "--max-batch 1")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()

    settings = {"one per forward": ["--max-batch", "1"], "micro-batched": args.batching.split()}
    report = {"requests": args.requests, "concurrency": args.concurrency,
              "rounds": args.rounds, "batching": args.batching, "kinds": {}}
    for kind in args.kinds.split(","):
        bodies = payloads(args.data_root, 200, kind)
        runs = {name: [] for name in settings}
        expected = None
        for _ in range(args.rounds):
            for name, extra in settings.items():
                process, url = start_server(args.checkpoint, extra)
                try:
                    expected = expected or expected_labels(url, bodies)
                    asyncio.run(load(url, bodies, 200, args.concurrency))  # warm-up
                    result = asyncio.run(load(url, bodies, args.requests, args.concurrency))
                    runs[name].append(figures(result, expected))
                finally:
                    process.terminate()
                    process.wait(timeout=30)
                f = runs[name][-1]
                print(f"{kind:4} {name:15} {f['requests_per_second']:7.0f} req/s  p50 "
                      f"{f['p50_ms']:5.1f} ms  p99 {f['p99_ms']:5.1f} ms  errors "
                      f"{f['errors']}", flush=True)
        summary = {}
        for name, rounds in runs.items():
            summary[name] = {key: statistics.median(r[key] for r in rounds)
                             for key in rounds[0] if key not in ("errors", "requests")}
            summary[name]["errors"] = sum(r["errors"] for r in rounds)
            summary[name]["requests"] = sum(r["requests"] for r in rounds)
        ratios = [b["requests_per_second"] / a["requests_per_second"]
                  for a, b in zip(runs["one per forward"], runs["micro-batched"], strict=True)]
        summary["batching_speedup"] = {"median": statistics.median(ratios),
                                       "min": min(ratios), "max": max(ratios)}
        report["kinds"][kind] = summary
        print(f"{kind}: micro-batching x{summary['batching_speedup']['median']:.2f} requests/s "
              f"(rounds {min(ratios):.2f}-{max(ratios):.2f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
