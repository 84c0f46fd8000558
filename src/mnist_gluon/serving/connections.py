"""mnist-serve's connections: how long a client may take, how many may be open, and how a
connection closes while its client is still sending.

uvicorn times out idle keep-alive connections but not a request's headers or body, and it
accepts connections until the process runs out of file descriptors. `guarded_protocol` adds
what it lacks to its HTTP/1.1 protocol:

- a request's headers must arrive within `header_s` of its first byte, and its body within
  `body_s` of its headers; a slow client is disconnected (408 when no request had begun);
- at `max_connections`, a new connection displaces the one that has waited longest without
  sending a whole request (a slow or idle client), or is refused when every one is busy;
- a response sent before the request's body was read (413, 401, ...) is followed by a lingering
  close, as nginx does: the server stops writing, then reads and discards what the client still
  sends for up to `LINGER_S`, so the client reads the response instead of a connection reset.
"""

from __future__ import annotations

import resource
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .inputs import SECURITY_HEADERS
from .settings import ConnectionLimits

LINGER_S = 5.0
FILES_KEPT_FREE = 64  # descriptors left for the model, logs and the listening socket
TIMEOUT_BODY = b"request took too long\r\n"
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n"
                    b"content-length: %d\r\nconnection: close\r\n%s\r\n%s"
                    % (len(TIMEOUT_BODY), b"".join(b"%s: %s\r\n" % pair
                                                   for pair in SECURITY_HEADERS), TIMEOUT_BODY))


def usable_connections(wanted: int) -> int:
    """`wanted`, or fewer if the file-descriptor limit is lower (the soft limit is raised to
    the hard one first, as servers do)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FILES_KEPT_FREE))


class LingeringTransport:
    """The connection's transport as uvicorn sees it: closing it lingers when the client may
    still be sending."""

    def __init__(self, transport, protocol: GuardedProtocol):
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        self._protocol.close_lingering()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def __getattr__(self, name):
        return getattr(self._transport, name)


class GuardedProtocol(H11Protocol):
    limits = ConnectionLimits()

    def connection_made(self, transport) -> None:
        self.raw_transport = transport
        self.lingering = False
        self.deadline = None  # the timer of the phase a request is in, if any
        self.waiting_since: float | None = time.monotonic()  # no request in hand since
        super().connection_made(LingeringTransport(transport, self))
        if len(self.connections) > self.limits.max_connections and not self.make_room():
            self.drop()
            return
        self.start_phase(self.limits.header_s)

    def make_room(self) -> bool:
        """Close the connection that has waited longest without a whole request."""
        waiting = [c for c in self.connections if c is not self and c.waiting_since is not None]
        if not waiting:
            return False
        min(waiting, key=lambda c: c.waiting_since).drop()
        return True

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # discarded: the response has been sent
        if self.deadline is None and (self.cycle is None or self.cycle.response_complete):
            self.start_phase(self.limits.header_s)  # the next request on a kept-alive connection
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # its headers have arrived
            self.waiting_since = None
            self.start_phase(self.limits.body_s if self.cycle.more_body else None)
        elif self.cycle is not None and not self.cycle.more_body \
                and not self.cycle.response_complete:
            self.start_phase(None)  # the body is complete

    def on_response_complete(self) -> None:
        self.start_phase(None)
        self.waiting_since = time.monotonic()
        super().on_response_complete()

    def connection_lost(self, exc) -> None:
        self.start_phase(None)
        self.waiting_since = None
        super().connection_lost(exc)

    def start_phase(self, seconds: float | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = None if seconds is None else self.loop.call_later(seconds, self.too_slow)

    def too_slow(self) -> None:
        self.deadline = None
        if self.cycle is None or self.cycle.response_complete:
            self.raw_transport.write(TIMEOUT_RESPONSE)  # no request had begun: say why
        self.drop()

    def drop(self) -> None:
        self.start_phase(None)
        self.waiting_since = None
        self.raw_transport.close()

    def close_lingering(self) -> None:
        if self.lingering or self.raw_transport.is_closing():
            return
        if self.conn.their_state is not h11.SEND_BODY:
            self.drop()
            return
        self.lingering = True
        self.start_phase(None)
        self.waiting_since = None
        self.raw_transport.write_eof()
        self.raw_transport.resume_reading()
        self.loop.call_later(LINGER_S, self.raw_transport.close)

    def eof_received(self):
        if self.lingering:
            self.raw_transport.close()
        return super().eof_received()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """uvicorn's HTTP/1.1 protocol with `limits`, for `uvicorn.Config(http=...)`."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})
