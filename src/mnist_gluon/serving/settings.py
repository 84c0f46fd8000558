"""What mnist-serve can be told: its request limits, its connection limits and its options.
Apart from serve.py, so that the command line reads their defaults without importing the
server."""

from __future__ import annotations

from dataclasses import dataclass

from ..inference.images import MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 4 * 1024 * 1024
    # Request bodies being received, all connections together: 1,000 connections each
    # uploading a whole body would otherwise hold 4 GiB.
    max_bytes_in_flight: int = 256 * 1024 * 1024
    max_images: int = 256  # images in one JSON request
    max_image_pixels: int = MAX_IMAGE_PIXELS  # an uploaded image's size, from its header


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a client may take, and how many may be connected (http_connections.py)."""

    header_s: float = 10.0  # from a request's first byte to the end of its headers
    body_s: float = 30.0  # from the end of the headers to the end of the body
    keep_alive_s: float = 5.0  # an idle connection between requests (uvicorn's own setting)
    max_connections: int = 1000


@dataclass(frozen=True)
class ServeOptions:
    token: str | None = None  # when set, /v1/* needs "Authorization: Bearer <token>"
    limits: Limits = Limits()
    max_batch: int = 16  # > 1: dynamic micro-batching of waiting requests
    max_wait_ms: float = 0.0  # how long a micro-batch waits to fill up
    # Host names the server answers to (empty: any); origins whose pages may POST to it.
    allowed_hosts: tuple[str, ...] = ()
    cors: tuple[str, ...] = ()
    connections: ConnectionLimits = ConnectionLimits()
