"""A download is bounded: a mirror that streams forever is cut off at the size a data file may
have, one that trickles at the time a download may take, and a signal stops a download at
once. Each ends as one line naming the mirror, exit status 2 (143 after SIGTERM), and no
file or folder is left where the data would have gone."""

import http.server
import os
import signal
import subprocess
import threading
import time

import pytest

from support import BIN


class Endless(http.server.BaseHTTPRequestHandler):
    """Sends bytes with no Content-Length and no end, or a byte at a time with pauses."""

    pause = 0.0
    requests: list[str] = []

    def do_GET(self):
        type(self).requests.append(self.path)
        self.send_response(200)
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\0" * (1 if self.pause else 1 << 20))
                self.wfile.flush()
                if self.pause:
                    time.sleep(self.pause)
        except OSError:  # the client hung up, as it should
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror():
    servers = []

    def start(pause: float) -> tuple[str, type[Endless]]:
        handler = type("Handler", (Endless,), {"pause": pause, "requests": []})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, handler))
        return f"http://127.0.0.1:{server.server_address[1]}/", handler

    yield start
    for server, _ in servers:
        server.shutdown()
        server.server_close()


def train_from(url: str, root, *, env=None, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "mnist-train"), "--config", "smoke", "--out", str(root.parent / "run"),
         "--data-root", str(root), "--set", f"data.mirrors=[{url}]"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})}, **popen)


def test_a_mirror_that_streams_forever_is_cut_off_at_a_data_files_size(mirror, tmp_path):
    url, _ = mirror(0.0)
    process = train_from(url, tmp_path / "data")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert err.count("\n") == 1 and "it sent more than the 134,217,728 bytes a file here may " \
        "have" in err, err
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


def test_a_mirror_that_trickles_is_cut_off_at_the_download_deadline(mirror, tmp_path):
    url, _ = mirror(0.2)
    started = time.monotonic()
    process = train_from(url, tmp_path / "data", env={"MNIST_GLUON_DOWNLOAD_SECONDS": "2"})
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert time.monotonic() - started < 30
    assert err.count("\n") == 1 and " s and was still sending" in err, err
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("signum, status, words", [
    (signal.SIGTERM, 143, "mnist-train: stopped by SIGTERM before training began; nothing was "
                          "trained\n"),
    (signal.SIGINT, 130, "mnist-train: interrupted; nothing had been written; run the same "
                         "command again\n"),
])
def test_a_signal_stops_a_download_at_once(mirror, tmp_path, signum, status, words):
    url, handler = mirror(0.5)
    process = train_from(url, tmp_path / "data")
    deadline = time.monotonic() + 60
    while not handler.requests:  # the download has begun
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    time.sleep(1)
    sent = time.monotonic()
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert process.returncode == status, err
    assert words in err
    assert not (tmp_path / "data").exists()
