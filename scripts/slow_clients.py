#!/usr/bin/env python
"""mnist-serve under slow clients: how fast a new client's /healthz is answered while many
connections trickle their headers, and how long the server keeps those connections.

    python scripts/slow_clients.py --checkpoint runs/base/best.params [--clients 1000]

Each slow client opens a connection and sends one header line a second, never the blank line
that ends the headers (a slowloris). The server is started with its default settings unless
more arguments follow `--`.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="how long the slow clients keep trickling")
    parser.add_argument("serve_args", nargs="*", help="more mnist-serve options, after --")
    args = parser.parse_args()

    serve = Path(sys.executable).parent / "mnist-serve"
    server = subprocess.Popen([str(serve), "--checkpoint", args.checkpoint, "--port", "0",
                               *args.serve_args], stderr=subprocess.PIPE, text=True)
    url = re.search(r" on (http://\S+/) ", server.stderr.readline()).group(1)
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    try:
        slow = []
        for _ in range(args.clients):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            sock.setblocking(False)
            slow.append(sock)
        print(f"{len(slow)} slow connections open")
        answers, started, line = [], time.monotonic(), 0
        while time.monotonic() - started < args.seconds:
            line += 1
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(f"X-Slow-{line}: 1\r\n".encode())
            began = time.perf_counter()
            with urllib.request.urlopen(url + "healthz", timeout=30) as response:
                assert response.status == 200
            answers.append(time.perf_counter() - began)
            time.sleep(1)
        open_ = sum(still_open(sock) for sock in slow)
        print(f"new clients' /healthz: median {statistics.median(answers) * 1000:.1f} ms, "
              f"max {max(answers) * 1000:.1f} ms over {len(answers)} requests")
        print(f"after {args.seconds:.0f} s of trickling, the server kept {open_} of "
              f"{len(slow)} slow connections open")
    finally:
        server.terminate()
        server.wait()
    return 0


def still_open(sock: socket.socket) -> bool:
    """Whether the server still holds the connection open (what it sent is read and dropped)."""
    try:
        while sock.recv(65536):
            pass
        return False  # the server closed it
    except BlockingIOError:
        return True  # nothing more to read, and not closed
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
