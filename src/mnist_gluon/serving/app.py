"""`mnist-serve`: a prediction API, Prometheus metrics and a draw-a-digit page for a checkpoint.

The forward pass runs on one thread: MXNet 1.x's front end is not thread-safe, and one model
in memory answers every request. With `max_batch` > 1, requests waiting for that thread are
answered together in one forward pass. Uploaded images are decoded with Pillow on threads of
their own.
Nothing in a request names a file: uploads are read from the request's bytes only.
"""


import asyncio
import dataclasses
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np

from ..data import IMAGE_SIZE, PIXELS
from ..errors import UserError
from ..explain import METHODS
from ..inference.classifier import Classifier, load
from ..metrics import softmax
from .inputs import (
    ApiError,
    BodyBudget,
    RequestGuard,
    check_token,
    image_from_form,
    image_pixels,
    pixels_from_json,
    read_body,
)
from .metrics import Metrics, MetricsMiddleware
from .settings import ConnectionLimits, Limits, ServeOptions

if TYPE_CHECKING:  # imports MXNet
    from ..explain.attribution import Explanations

IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp")
RAW_BODY_TYPES = (*IMAGE_TYPES, "application/octet-stream")  # an image sent as the body


class AddressError(UserError):
    """The server cannot listen where it was asked to."""


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
DECODE_THREADS = 2  # Pillow decodes without the GIL


class Engine:
    """The model's one thread, the micro-batcher that feeds it, and the threads that decode
    uploaded images (with Pillow, not MXNet), so that small requests never queue behind big
    uploads."""

    def __init__(self, classifier: Classifier, max_batch: int, max_wait_ms: float,
                 on_forward=None):
        self.classifier = classifier
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.on_forward = on_forward or (lambda rows: None)
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="mxnet")
        self.decoders = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")
        self.queue: asyncio.Queue | None = None
        self.collector: asyncio.Task | None = None

    async def start(self) -> None:
        if self.max_batch > 1:
            self.queue = asyncio.Queue()
            self.collector = asyncio.create_task(self.collect())

    async def stop(self) -> None:
        if self.collector is not None:
            self.collector.cancel()
        self.thread.shutdown(wait=True)
        self.decoders.shutdown(wait=True)

    async def call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.thread, fn, *args)

    async def decode(self, raw: bytes, max_pixels: int) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self.decoders, image_pixels,
                                                                raw, max_pixels)

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        self.on_forward(len(pixels))
        return self.classifier.probabilities(pixels)

    async def classify(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for N x 784 raw pixels."""
        if self.queue is None or len(pixels) >= self.max_batch:
            return await self.call(self.forward, pixels)
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((pixels, future))
        return await future

    async def collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            rows = len(batch[0][0])
            deadline = loop.time() + self.max_wait
            while rows < self.max_batch:
                if self.queue.empty():
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self.queue.get(), left))
                    except asyncio.TimeoutError:  # not yet TimeoutError on Python 3.10
                        break
                else:
                    batch.append(self.queue.get_nowait())
                rows += len(batch[-1][0])
            try:
                result = await self.call(self.forward, np.concatenate([p for p, _ in batch]))
            except Exception as error:  # the waiting requests answer 500, the loop goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            start = 0
            for pixels, future in batch:
                if not future.done():  # a client that went away leaves a cancelled future
                    future.set_result(result[start : start + len(pixels)])
                start += len(pixels)


def model_info(checkpoint) -> dict[str, Any]:
    """What `GET /v1/model` says about the checkpoint being served."""
    from ..checkpoint import library_versions
    from ..data import DATASETS
    from ..files import sha256_of

    sidecar = checkpoint.sidecar
    metrics = sidecar.metrics if sidecar is not None else None
    return {
        "dataset": checkpoint.dataset,
        "classes": list(DATASETS[checkpoint.dataset].class_names),
        "architecture": asdict(checkpoint.architecture),
        "parameters": int(sum(array.size for array in checkpoint.arrays.values())),
        "normalization": asdict(checkpoint.normalization),
        # A sidecar's checksum was checked against the file when it was read.
        "checkpoint": {"file": checkpoint.params_path.name,
                       "sha256": (sidecar.params_sha256 if sidecar is not None
                                  else sha256_of(checkpoint.params_path))},
        # Training never reads the test set: what it recorded is the validation score.
        "training": {"epoch": sidecar.epoch,
                     "validation_accuracy": metrics.val_accuracy if metrics else None,
                     "validation_loss": metrics.val_loss if metrics else None}
        if sidecar is not None else None,
        # An export (model.json, or model.mnc's own description): the checkpoint it came from.
        "exported_from": (checkpoint.exported or {}).get("checkpoint"),
        "versions": library_versions(),
    }


# --- the application ---------------------------------------------------------------------

def openapi_images(limits: Limits, answer: dict, what: str) -> dict[str, Any]:
    """The OpenAPI description of a route that takes images as /v1/predict does and answers
    `answer` (a JSON schema) with status 200, saying `what`."""
    pixels = {"type": "array", "minItems": 1, "maxItems": limits.max_images,
              "items": {"type": "array", "minItems": PIXELS, "maxItems": PIXELS,
                        "items": {"type": "number", "minimum": 0, "maximum": 255}}}
    binary = {"type": "string", "format": "binary"}
    error = {"content": {"application/json": {"schema": {
        "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
    return {
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "object", "required": ["pixels"],
                                            "properties": {"pixels": pixels}}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                               "properties": {"image": binary}}},
            **{media: {"schema": binary} for media in IMAGE_TYPES},
        }},
        "responses": {
            "200": {"description": what, "content": {"application/json": {"schema": answer}}},
            **{code: {"description": why, **error} for code, why in [
                ("400", "Malformed JSON, multipart body or image"),
                ("401", "Missing or wrong token"),
                ("413", "Body or batch too large"),
                ("415", "Unsupported Content-Type"),
                ("422", "Well-formed, but not images (shape, values, or a query parameter)")]},
        },
    }


def openapi_predict(limits: Limits) -> dict[str, Any]:
    ranked = {"type": "object", "required": ["label", "probability"],
              "properties": {"label": {"type": "integer"}, "probability": {"type": "number"}}}
    answer = {"type": "object", "required": ["predictions"], "properties": {"predictions": {
        "type": "array", "items": {"type": "object", "required": ["label", "top_k"],
                                   "properties": {"label": {"type": "integer"},
                                                  "top_k": {"type": "array",
                                                            "items": ranked}}}}}}
    return openapi_images(limits, answer, "The top-k classes of each image, best first")


def openapi_explain(limits: Limits) -> dict[str, Any]:
    grid = lambda items: {"type": "array", "minItems": IMAGE_SIZE,  # noqa: E731
                          "maxItems": IMAGE_SIZE, "items": {
                              "type": "array", "minItems": IMAGE_SIZE, "maxItems": IMAGE_SIZE,
                              "items": items}}
    item = {"type": "object", "required": ["label", "target", "probabilities", "map", "image"],
            "properties": {"label": {"type": "integer"}, "target": {"type": "integer"},
                           "probabilities": {"type": "array", "items": {"type": "number"}},
                           "map": grid({"type": "number"}),
                           "image": grid({"type": "number", "minimum": 0, "maximum": 255})}}
    answer = {"type": "object", "required": ["method", "explanations"], "properties": {
        "method": {"type": "string", "enum": list(METHODS)},
        "explanations": {"type": "array", "items": item}}}
    return openapi_images(limits, answer, "Each image's label and class probabilities, and a "
                          "28 x 28 map attributing the target class's logit to its pixels")


def explanation_dicts(explained: "Explanations", pixels: np.ndarray) -> list[dict[str, Any]]:
    """/v1/explain's answer for each image: the predicted label, the probabilities, the class
    the map explains, the map, and the 28 x 28 image (0-255) the model saw: an upload's,
    cropped and centred."""
    images = np.asarray(pixels, np.float32).reshape(explained.maps.shape)
    return [{"label": int(row.argmax()), "target": int(target), "probabilities": row.tolist(),
             "map": (image_map + 0.0).tolist(), "image": image.tolist()}
            for row, target, image_map, image in zip(softmax(explained.logits),
                                                     explained.targets, explained.maps, images,
                                                     strict=True)]


def create_app(classifier: Classifier, options: ServeOptions):
    """The FastAPI application serving `classifier`."""
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi.responses import JSONResponse

    from ..inference.predict import answer_dict, ranked

    info = model_info(classifier.checkpoint)
    classes = classifier.architecture.classes
    metrics = Metrics()
    engine = Engine(classifier, options.max_batch, options.max_wait_ms,
                    metrics.forward_rows.observe)
    budget = BodyBudget(options.limits.max_bytes_in_flight)
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    async def lifespan(app):
        await engine.start()
        yield
        await engine.stop()

    app = FastAPI(title="mnist-gluon", version=info["versions"]["mnist_gluon"],
                  description=f"Predictions from {info['checkpoint']['file']}",
                  docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    # As a dependency, the token is checked before the query is validated: without it, a
    # bad top_k is a 401, not a 422 that tells a stranger about the API.
    def require_token(request: Request) -> None:
        check_token(request, options.token)

    guarded = [Depends(require_token)]

    answer_errors_as_json(app)
    add_open_routes(app, page, metrics)

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi():
        return app.openapi()

    @app.get("/v1/model", summary="The model being served", dependencies=guarded)
    async def model():
        return info

    @app.post("/v1/predict", summary="Classify images", openapi_extra=openapi_predict(
        options.limits), dependencies=guarded)
    async def predict(request: Request, top_k: Annotated[int, Query(
            ge=1, le=classes, description="How many classes to answer per image")] = 3):
        pixels = await request_pixels(request, engine, options.limits, budget)
        rows = await engine.classify(pixels)
        metrics.images.inc(len(rows))
        return JSONResponse({"predictions": [answer_dict(ranked(row, top_k)) for row in rows]})

    add_explain_route(app, engine, options, budget, metrics, guarded)
    add_middleware(app, options, metrics)
    return app


def add_middleware(app, options: ServeOptions, metrics: Metrics) -> None:
    """CORS for the origins named, the host and origin checks, and the metrics of every
    route (added last: it is the outermost)."""
    if options.cors:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(options.cors),
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(RequestGuard, hosts=options.allowed_hosts, cors=options.cors)
    app.add_middleware(MetricsMiddleware, metrics=metrics,
                       routes=frozenset(route.path for route in app.routes))


def add_explain_route(app, engine: Engine, options: ServeOptions, budget: BodyBudget,
                      metrics: Metrics, guarded: list) -> None:
    """POST /v1/explain: the bodies /v1/predict takes, answered with a map per image."""
    from fastapi import Query, Request
    from fastapi.responses import JSONResponse

    classifier = engine.classifier

    @app.post("/v1/explain", summary="Explain the classes of images", openapi_extra=
              openapi_explain(options.limits), dependencies=guarded)
    async def explain(request: Request, method: Annotated[Literal[METHODS], Query(
            description="How the logit is attributed to the pixels")] = METHODS[0],
            target: Annotated[int | None, Query(
                ge=0, le=classifier.architecture.classes - 1,
                description="The class to explain (default: each image's predicted class)")]
            = None):
        pixels = await request_pixels(request, engine, options.limits, budget)
        # on the model's thread, where the attributor is made on first use
        explained = await engine.call(lambda: classifier.attributor.explain(pixels, method,
                                                                            target))
        metrics.explained.inc(len(pixels))
        return JSONResponse({"method": method,
                             "explanations": explanation_dicts(explained, pixels)})


def add_open_routes(app, page: str, metrics: "Metrics") -> None:
    """The page, the liveness probe and the metrics: open even with a token, for browsers,
    probes and scrapers."""
    from fastapi.responses import HTMLResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def draw_page():
        return page

    @app.get("/healthz", summary="Liveness: answers while the server runs")
    async def healthz():
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics: requests, errors, latency",
             response_class=Response)
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def answer_errors_as_json(app) -> None:
    """Every answer other than 200 is {"error": "..."}; a crash says no more than that."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def failure(status: int, message: str, headers=None):
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request, error: ApiError):
        return failure(error.status, error.message, error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):
        return failure(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error: RequestValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return failure(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def crashed(request, error: Exception):
        return failure(500, "internal error; the server log has the details")


async def request_pixels(request, engine: Engine, limits: Limits,
                         budget: BodyBudget) -> np.ndarray:
    """The images a prediction request sends, as N x 784 pixels: JSON, a raw image body or
    a form upload."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ("application/json", "multipart/form-data", *RAW_BODY_TYPES):
        raise ApiError(415, "send JSON pixels (application/json), an image body "
                            "(image/png, image/jpeg, image/bmp) or a multipart/form-data "
                            f"upload; got {media or 'no Content-Type'}")
    body = await read_body(request, limits.max_body_bytes, budget)
    if media == "application/json":
        return pixels_from_json(body, limits.max_images)
    raw = await image_from_form(request.headers, body) if media.startswith(
        "multipart/") else body
    return await engine.decode(raw, limits.max_image_pixels)


# --- running it --------------------------------------------------------------------------

def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise AddressError(f"--host {host} is not an address of this machine "
                           f"({error.strerror})") from None
    family, _, _, _, address = infos[0]
    # Named as TCP, so that asyncio sets TCP_NODELAY on each connection: without it, Nagle's
    # algorithm and delayed ACKs hold every response for 40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        what = ("is in use; pass another --port (0 picks a free one)"
                if error.errno == 98 else f"cannot be used ({error.strerror})")
        raise AddressError(f"{host}:{port} {what}") from None
    sock.listen(2048)
    return sock


def run_server(app, sock: socket.socket, access_log: bool, limits: ConnectionLimits) -> None:
    import uvicorn

    from .connections import guarded_protocol, usable_connections

    limits = dataclasses.replace(limits,
                                 max_connections=usable_connections(limits.max_connections))
    config = uvicorn.Config(app, log_level="info" if access_log else "warning",
                            access_log=access_log, timeout_graceful_shutdown=5,
                            http=guarded_protocol(limits),
                            timeout_keep_alive=limits.keep_alive_s)
    uvicorn.Server(config).run(sockets=[sock])


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve_checkpoint(params_path: Path, host: str, port: int, options: ServeOptions,
                     device: str, bare_normalization, access_log: bool, say) -> None:
    classifier = load(params_path, device, bare_normalization)
    classifier.probabilities(np.zeros((1, PIXELS), np.float32))  # builds the graph once
    sock = listen(host, port)
    loopback = ipaddress.ip_address(sock.getsockname()[0]).is_loopback
    if not options.allowed_hosts and loopback:
        options = dataclasses.replace(options, allowed_hosts=LOOPBACK_NAMES)
    app = create_app(classifier, options)
    url = url_of(sock)
    if options.token is None and not loopback:
        say(f"warning: listening on {host} without --token: anyone who reaches it can use it")
    say(f"serving {params_path} on {url} (draw at {url}, API at {url}v1/predict"
        f"{', token required' if options.token else ''}); Ctrl-C stops")
    run_server(app, sock, access_log, options.connections)
