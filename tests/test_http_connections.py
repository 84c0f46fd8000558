"""mnist-serve's connections against slow, idle and oversized clients, through real sockets to
a running server."""

import socket
import time
import urllib.parse

import pytest

from support import fetch, serving


def connect(url: str) -> socket.socket:
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_a_client_that_never_finishes_its_headers_gets_a_408_and_is_disconnected(model):
    with serving(model, "--header-timeout", "0.5") as (url, _, _):
        sock = connect(url)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: unfinished
        answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert fetch(url + "healthz")[0] == 200  # the server goes on


def test_connections_that_never_send_a_byte_are_closed_after_the_header_timeout(model):
    with serving(model, "--header-timeout", "1") as (url, _, _):
        silent = [connect(url) for _ in range(300)]
        assert fetch(url + "healthz")[0] == 200
        for sock in silent:  # each recv waits up to the socket's 30 s timeout
            assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
            sock.close()


def test_a_body_slower_than_the_body_timeout_is_cut_off(model):
    with serving(model, "--body-timeout", "0.5") as (url, _, _):
        sock = connect(url)
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"pix")
        assert read_until_closed(sock) == b""
        status, _, metrics = fetch(url + "metrics")
        assert status == 200 and b'status="500"' not in metrics


def test_an_idle_kept_alive_connection_is_closed_after_its_timeout(model):
    with serving(model, "--keep-alive-timeout", "0.5") as (url, _, _):
        sock = connect(url)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in answer


def test_at_the_connection_cap_new_clients_displace_the_slowest_waiting_ones(model):
    with serving(model, "--max-connections", "20", "--header-timeout", "60") as (url, _, _):
        slow = [connect(url) for _ in range(60)]
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # and nothing more
        assert fetch(url + "healthz")[0] == 200
        assert fetch(url + "v1/model")[0] == 200
        for sock in slow[:30]:  # the oldest were displaced as the newer ones came
            assert read_until_closed(sock) == b""
        for sock in slow:
            sock.close()


@pytest.mark.parametrize("size", [5 * 2**20, 64 * 2**20])
def test_a_body_over_the_limit_is_answered_413_even_to_a_client_that_sends_it_all_first(
        model, size):
    """Python's urllib sends the whole body before it reads a response: a server that closes
    at once resets the connection under it. The server lingers, reading what still comes."""
    with serving(model) as (url, _, _):
        status, _, body = fetch(url + "v1/predict", "POST", bytes(size),
                                {"Content-Type": "image/png"})
        assert status == 413 and b"bytes" in body


def headers_and_body(answer: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}, body


def test_the_408_declares_the_length_of_the_body_it_sends(model):
    with serving(model, "--header-timeout", "0.5") as (url, _, _):
        sock = connect(url)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        headers, body = headers_and_body(read_until_closed(sock))
        assert int(headers["content-length"]) == len(body) == len(b"request took too long\r\n")


def test_a_request_with_both_content_length_and_transfer_encoding_is_refused_and_closed(model):
    with serving(model) as (url, _, _):
        sock = connect(url)
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 4\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                     b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # smuggled, or not
        answer = read_until_closed(sock)  # returns: the server closed the connection
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert answer.count(b"HTTP/1.1 ") == 1  # the second request was never answered
        assert b"both Content-Length and Transfer-Encoding" in answer
        assert fetch(url + "healthz")[0] == 200


@pytest.mark.parametrize("path, method", [("", "GET"), ("healthz", "GET"), ("v1/model", "GET"),
                                          ("v1/predict", "POST"), ("nowhere", "GET")])
def test_every_answer_forbids_sniffing_and_framing(model, path, method):
    with serving(model) as (url, _, _):
        status, headers, _ = fetch(url + path, method, b"{}" if method == "POST" else None,
                                   {"Content-Type": "application/json"})
        assert status in (200, 404, 422)
        headers = {k.lower(): v for k, v in headers.items()}
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["content-security-policy"] == "frame-ancestors 'none'"


def test_uploads_in_flight_are_bounded_together_and_health_still_answers(model):
    """1,000 connections uploading 4 MiB bodies held about 4 GiB."""
    with serving(model, "--max-body", "65536", "--max-in-flight", "100000",
                 "--body-timeout", "60") as (url, _, _):
        uploads = []
        for _ in range(3):
            sock = connect(url)
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                         b"image/png\r\nContent-Length: 65000\r\n\r\n" + bytes(45_000))
            uploads.append(sock)
            time.sleep(0.5)  # received in this order
        started = time.monotonic()
        assert fetch(url + "healthz")[0] == 200
        assert time.monotonic() - started < 1
        refused = [read_until_closed(sock) for sock in uploads[2:]]
        assert refused[0].startswith(b"HTTP/1.1 503 ")
        assert b"bytes of request bodies; send again shortly" in refused[0]
        assert b"retry-after: 1" in refused[0].lower()
        for sock in uploads:
            sock.close()
