"""What a request sends, read and checked: its Host and Origin, its token, its body within the
size limit, JSON pixels, a form upload, an image. Every refusal is a status and a message that
says what to send instead."""

import hmac
import json
import urllib.parse

import numpy as np

from ..data import PIXELS
from ..errors import DataError


class ApiError(Exception):
    """An answer other than 200: its status and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def check_token(request, token: str | None) -> None:
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        raise ApiError(401, "this server needs a token: send 'Authorization: Bearer <token>'",
                       {"WWW-Authenticate": "Bearer"})


class BodyBudget:
    """The bytes of request bodies being received, by every connection together."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0

    def take(self, size: int) -> None:
        if self.held + size > self.limit:
            raise ApiError(503, f"the server is already receiving {self.limit:,} bytes of "
                                "request bodies; send again shortly", {"Retry-After": "1"})
        self.held += size


async def read_body(request, limit: int, budget: BodyBudget) -> bytes:
    too_large = ApiError(413, f"the request body is larger than {limit:,} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            budget.take(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer: counted as the client's doing (nginx's 499), not a crash.
        raise ApiError(CLIENT_CLOSED, "the client closed the connection during the upload"
                       ) from None
    finally:
        budget.held -= sum(map(len, chunks))
    return b"".join(chunks)


CLIENT_CLOSED = 499  # nginx's status for a request its client abandoned
MAX_JSON_DEPTH = 8  # pixels nest 3 deep: {"pixels": [[...], ...]}


def outside_strings(codes: np.ndarray) -> np.ndarray:
    """Which bytes of a JSON text lie outside its strings (quotes included in neither), in
    one vectorised pass: a quote is escaped when an odd run of backslashes precedes it."""
    positions = np.arange(len(codes))
    backslash = codes == ord("\\")
    last_other = np.maximum.accumulate(np.where(backslash, -1, positions))
    run = positions - 1 - np.concatenate(([-1], last_other[:-1]))  # backslashes just before
    quote = (codes == ord('"')) & (run % 2 == 0)
    opened = np.cumsum(quote) % 2  # 1 from an opening quote up to its closing one
    return (opened == 0) & ~quote


def json_shape(body: bytes) -> tuple[int, bool]:
    """(how deep the brackets nest, whether a true or false appears), strings aside: found
    in time linear in the body, before parsing, which recurses once per level."""
    codes = np.frombuffer(body, dtype=np.uint8)
    if not len(codes):
        return 0, False
    outside = outside_strings(codes)
    steps = (np.isin(codes, (ord("["), ord("{"))).astype(np.int64)
             - np.isin(codes, (ord("]"), ord("}")))) * outside
    boolean = bool((np.isin(codes, (ord("t"), ord("f"))) & outside).any())
    return int(np.cumsum(steps).max()), boolean


def pixels_from_json(body: bytes, max_images: int) -> np.ndarray:
    depth, boolean = json_shape(body)
    if depth > MAX_JSON_DEPTH:
        raise ApiError(400, f"the JSON nests {depth} levels deep; pixels nest 3 deep: "
                            '{"pixels": [[784 values], ...]}')
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    shape = 'send {"pixels": [[784 values 0-255, row by row], ...]}'
    if not isinstance(payload, dict) or "pixels" not in payload:
        raise ApiError(422, f"no 'pixels' key; {shape}")
    if boolean:
        raise ApiError(422, f"the body holds true or false; pixel values are numbers; {shape}")
    rows = payload["pixels"]
    if not isinstance(rows, list) or not rows:
        raise ApiError(422, f"'pixels' must be a non-empty list of images; {shape}")
    if not isinstance(rows[0], list):
        raise ApiError(422, f"pixels[0] is not a list; one image is sent as a list of one: "
                            f"{shape}")
    if len(rows) > max_images:
        raise ApiError(413, f"{len(rows)} images in one request; at most {max_images} "
                            "are taken: split the batch")
    # numpy checks the values in C: a string makes the array's dtype text, a list nests it.
    shaped = all(isinstance(row, list) and len(row) == PIXELS for row in rows)
    try:
        pixels = np.array(rows) if shaped else None
    except ValueError:  # ragged: a value that is itself a list
        pixels = None
    if pixels is None or pixels.dtype.kind not in "iuf" or pixels.ndim != 2:
        raise ApiError(422, what_is_wrong(rows))
    bad = ~np.isfinite(pixels) | (pixels < 0) | (pixels > 255)
    if bad.any():
        raise ApiError(422, f"pixels[{int(np.argmax(bad.any(axis=1)))}] has values outside "
                            "0-255")
    from ..inference.images import nothing_drawn

    for i, blank in enumerate(nothing_drawn(pixels)):
        if blank is not None:
            raise ApiError(422, f"pixels[{i}] {blank}")
    return pixels.astype(np.float32)


def what_is_wrong(rows: list) -> str:
    """The first image in a JSON batch that is not 784 numbers, and how."""
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != PIXELS:
            got = f"has {len(row)} values" if isinstance(row, list) else "is not a list"
            return (f"pixels[{i}] {got}; each image is {PIXELS} values (28 x 28, row by row)")
        if not all(type(value) in (int, float) for value in row):
            return f"pixels[{i}] holds something other than numbers"
    return "pixels must be numbers"


async def image_from_form(headers, body: bytes) -> bytes:
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def chunks():
        yield body

    try:
        form = await MultiPartParser(headers, chunks(), max_files=1, max_fields=16).parse()
    except (MultiPartException, ValueError) as error:
        raise ApiError(400, f"the multipart body cannot be read ({error})") from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise ApiError(422, "the form holds no file; upload the image as a file field, "
                            "e.g. curl -F image=@digit.png")
    raw = await files[0].read()  # the part's bytes: its filename is never used
    await form.close()
    return raw


def image_pixels(raw: bytes, max_pixels: int) -> np.ndarray:
    """784 pixels from an uploaded image, preprocessed as `mnist-predict` does."""
    from ..inference.images import decode_image, mnist_like

    try:
        grey = decode_image(raw, "the upload", max_pixels)
    except DataError as error:
        raise ApiError(400, str(error)) from None
    try:
        return mnist_like(grey, "the upload").reshape(1, -1)
    except DataError as error:  # a well-formed image with nothing drawn
        raise ApiError(422, str(error)) from None


# On every answer: no content sniffing (a JSON error is not HTML), and no framing by another
# site's page (a click on the draw page cannot be stolen).
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", b"frame-ancestors 'none'"))


class RequestGuard:
    """Refuses a Host the server does not answer to (so a page of another site whose name
    was rebound to this address cannot reach the API), a POST from another origin's page
    unless --cors names that origin, and a request that gives both Content-Length and
    Transfer-Encoding (closing its connection, as HTTP/1.1 says: the two would frame its body
    differently); adds SECURITY_HEADERS to every answer."""

    def __init__(self, app, hosts: tuple[str, ...], cors: tuple[str, ...]):
        self.app, self.hosts, self.cors = app, set(hosts), set(cors)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = with_security_headers(send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if "content-length" in headers and "transfer-encoding" in headers:
            return await refuse(send, 400, "the request gives both Content-Length and "
                                "Transfer-Encoding; send one of them", close=True)
        host = headers.get("host", "")
        try:  # "name", "name:port", "[::1]", "[::1]:port"
            name = urllib.parse.urlsplit(f"//{host}").hostname or ""
        except ValueError:
            name = ""
        origin = headers.get("origin")
        if self.hosts and name not in self.hosts:
            return await refuse(send, 400, f"Host {host!r} is not served here; mnist-serve "
                                f"answers to {', '.join(sorted(self.hosts))} "
                                "(--allowed-host adds a name)")
        same_site = origin is not None and origin.partition("://")[2] == host
        if (scope["method"] == "POST" and origin is not None and not same_site
                and origin not in self.cors):
            return await refuse(send, 403, f"a POST from the page of {origin} is refused; "
                                f"mnist-serve --cors {origin} allows it")
        return await self.app(scope, receive, send)


async def refuse(send, status: int, message: str, close: bool = False) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            *([(b"connection", b"close")] if close else [])]})
    await send({"type": "http.response.body", "body": body})


def with_security_headers(send):
    async def sending(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)

    return sending
