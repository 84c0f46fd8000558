"""mnist-serve: a real server process on 127.0.0.1, asked by real HTTP requests."""

import concurrent.futures
import hashlib
import http.client
import io
import json
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import zlib

import numpy as np
import pytest
from PIL import Image

from mnist_gluon.cli import predict_command, run
from support import BIN, as_drawn, fetch, multipart, serving

TOKEN = "s3cret-token"
PICKED = range(8)


@pytest.fixture(scope="module")
def server(model):
    with serving(model) as (url, _, _):
        yield url


@pytest.fixture(scope="module")
def guarded(model):
    """A server with a token and small limits: 64 KiB bodies, 4 images per request."""
    with serving(model, "--token", TOKEN, "--max-body", "65536", "--max-images", "4") as (
            url, _, _):
        yield url


def encoded(image: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def post(url: str, body: bytes, content_type: str, token: str | None = None,
         route: str = "v1/predict", **query):
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    target = url + route + (f"?{urllib.parse.urlencode(query)}" if query else "")
    status, _, answer = fetch(target, "POST", body, headers)
    return status, json.loads(answer)


def pixels_json(images: np.ndarray) -> bytes:
    return json.dumps({"pixels": images.reshape(len(images), -1).tolist()}).encode()


def assert_same_answer(served: dict, predicted: dict) -> None:
    assert served["label"] == predicted["label"]
    assert [k["label"] for k in served["top_k"]] == [k["label"] for k in predicted["top_k"]]
    np.testing.assert_allclose([k["probability"] for k in served["top_k"]],
                               [k["probability"] for k in predicted["top_k"]], rtol=1e-5,
                               atol=1e-7)


# --- predictions ---------------------------------------------------------------------------

def test_uploads_and_json_pixels_get_the_same_answers_as_mnist_predict(
        server, model, test_set, tmp_path, capsys):
    files = []
    for i in PICKED:
        drawn = as_drawn(test_set.images[i])
        for fmt, ext in (("PNG", "png"), ("JPEG", "jpg")):
            files.append(tmp_path / f"drawn{i}.{ext}")
            files[-1].write_bytes(encoded(drawn, fmt))
    np.save(tmp_path / "raw.npy", test_set.images[list(PICKED)])
    assert run(predict_command, ["--checkpoint", str(model), "--json", "--top-k", "4",
                                 *map(str, files), str(tmp_path / "raw.npy")]) == 0
    expected = json.loads(capsys.readouterr().out)

    for path, predicted in zip(files, expected, strict=False):
        media = "image/png" if path.suffix == ".png" else "image/jpeg"
        status, raw_body = post(server, path.read_bytes(), media, top_k=4)
        body, form_type = multipart("image", path.name, path.read_bytes(), media)
        form_status, form = post(server, body, form_type, top_k=4)
        assert status == form_status == 200, (raw_body, form)
        assert_same_answer(raw_body["predictions"][0], predicted)
        assert_same_answer(form["predictions"][0], predicted)

    status, batch = post(server, pixels_json(test_set.images[list(PICKED)]),
                         "application/json", top_k=4)
    assert status == 200 and len(batch["predictions"]) == len(PICKED)
    for served, predicted in zip(batch["predictions"], expected[len(files):], strict=True):
        assert_same_answer(served, predicted)
    labels = [p["label"] for p in batch["predictions"]]
    assert sum(label == test_set.labels[i] for i, label in zip(PICKED, labels, strict=True)) >= 7


def test_a_multipart_filename_is_never_read_from_disk(server, test_set, tmp_path):
    """The upload's bytes are classified, whatever file its name points at."""
    seven, two = test_set.images[0], test_set.images[1]  # MNIST's first test digits: 7, 2
    decoy = tmp_path / "decoy.png"
    decoy.write_bytes(encoded(as_drawn(two), "PNG"))
    body, form_type = multipart("image", str(decoy), encoded(as_drawn(seven), "PNG"))
    status, answer = post(server, body, form_type)
    assert status == 200 and answer["predictions"][0]["label"] == 7


def test_concurrent_requests_with_micro_batching_each_get_their_own_answer(model, test_set):
    images = test_set.images[:48]
    with serving(model, "--max-batch", "1") as (url, _, _):
        _, alone = post(url, pixels_json(images), "application/json")
    with serving(model, "--max-batch", "32", "--max-wait-ms", "50") as (url, _, _):
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda image: post(url, pixels_json(image[None]),
                                                       "application/json"), images))
        metrics = fetch(url + "metrics")[2].decode()
    for (status, answer), expected in zip(answers, alone["predictions"], strict=True):
        assert status == 200
        assert_same_answer(answer["predictions"][0], expected)
    forwards = float(re.search(r"^mnist_forward_batch_size_count (\S+)$", metrics, re.M)[1])
    rows = float(re.search(r"^mnist_forward_batch_size_sum (\S+)$", metrics, re.M)[1])
    assert rows == 48
    assert forwards < 48  # waiting requests shared forward passes


# --- what the server says about itself -----------------------------------------------------

def test_model_names_the_checkpoint_by_checksum_with_its_validation_score(server, model):
    status, _, body = fetch(server + "v1/model")
    info = json.loads(body)
    sidecar = json.loads(model.with_suffix(".json").read_text())
    assert status == 200
    assert info["checkpoint"] == {"file": "best.params",
                                  "sha256": hashlib.sha256(model.read_bytes()).hexdigest()}
    assert info["architecture"]["hidden"] == 128 and info["parameters"] == 101_770
    assert info["training"]["validation_accuracy"] == sidecar["metrics"]["val_accuracy"]
    assert info["classes"] == [str(d) for d in range(10)] and info["dataset"] == "mnist"


def test_health_and_prometheus_metrics_count_requests_errors_and_latency(model):
    with serving(model) as (url, _, _):
        assert fetch(url + "healthz")[:1] == (200,)
        for _ in range(3):
            fetch(url + "v1/model")
        fetch(url + "no/such/page")
        post(url, b"{", "application/json")
        status, headers, text = fetch(url + "metrics")
    from prometheus_client.parser import text_string_to_metric_families

    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text.decode())
               for s in family.samples}
    assert samples["mnist_http_requests_total", (("method", "GET"), ("route", "/v1/model"),
                                                 ("status", "200"))] == 3
    assert samples["mnist_http_errors_total", (("route", "other"), ("status", "404"))] == 1
    assert samples["mnist_http_errors_total", (("route", "/v1/predict"), ("status", "400"))] == 1
    assert samples["mnist_http_request_duration_seconds_count", (("route", "/v1/model"),)] == 3
    assert samples["mnist_http_request_duration_seconds_sum", (("route", "/v1/model"),)] > 0


def test_the_page_is_self_contained(server):
    status, headers, page = fetch(server)
    page = page.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "<canvas" in page and "pointerdown" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from elsewhere


# --- errors -------------------------------------------------------------------------------

def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG of no pixels whose header claims this size."""
    chunk = lambda kind, data: (len(data).to_bytes(4, "big") + kind + data  # noqa: E731
                                + zlib.crc32(kind + data).to_bytes(4, "big"))
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x00\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def damaged(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


A_STROKE = np.zeros((28, 28), np.uint8)
A_STROKE[4:24, 12:16] = 255  # a 1, of sorts: something is drawn
A_PNG = encoded(A_STROKE, "PNG")
A_JPEG = encoded(A_STROKE, "JPEG")


ZEROS = [0] * 784
STROKE = A_STROKE.reshape(-1).tolist()


def many_scans(count: int) -> bytes:
    """A progressive JPEG whose last scan is repeated `count` times."""
    last_scan = A_PROGRESSIVE.rindex(b"\xff\xda")
    return A_PROGRESSIVE[:-2] + A_PROGRESSIVE[last_scan:-2] * count + b"\xff\xd9"


A_PROGRESSIVE = encoded(A_STROKE, "JPEG", progressive=True)
REQUESTS = {
    # name: (content type, body, query, token, status, words in the message)
    "no token": ("application/json", {"pixels": [ZEROS]}, {}, None, 401, "Bearer"),
    "wrong token": ("application/json", {"pixels": [ZEROS]}, {}, "guess", 401, "Bearer"),
    "malformed JSON": ("application/json", b'{"pixels": [', {}, TOKEN, 400, "not valid JSON"),
    "not an image": ("image/png", b"GIF89a not a png", {}, TOKEN, 400, "not a PNG"),
    "cut-short PNG": ("image/png", A_PNG[:-20], {}, TOKEN, 400, "PNG data ends early"),
    "damaged PNG": ("image/png", damaged(A_PNG, 20), {}, TOKEN, 400,
                    "'IHDR' chunk fails its checksum"),
    "cut-short JPEG": ("image/jpeg", A_JPEG[:-40], {}, TOKEN, 400, "JPEG data ends early"),
    "empty PNG": ("image/png", png_claiming(0, 0), {}, TOKEN, 400, "could not be decoded"),
    # a decompression bomb is refused from its header, before anything is decoded
    "huge image": ("image/png", png_claiming(50_000, 50_000), {}, TOKEN, 400, "50000 x 50000"),
    "bad multipart": ("multipart/form-data; boundary=x", b"junk", {}, TOKEN, 400, "multipart"),
    "body too large": ("image/png", bytes(70_000), {}, TOKEN, 413, "65,536 bytes"),
    "too many images": ("application/json", {"pixels": [ZEROS] * 5}, {}, TOKEN, 413,
                        "at most 4"),
    "plain text": ("text/plain", b"7", {}, TOKEN, 415, "got text/plain"),
    "short image": ("application/json", {"pixels": [[0] * 783]}, {}, TOKEN, 422, "783 values"),
    "no pixels key": ("application/json", {"image": ZEROS}, {}, TOKEN, 422, "no 'pixels'"),
    "flat list": ("application/json", {"pixels": ZEROS}, {}, TOKEN, 422, "not a list"),
    "strings": ("application/json", {"pixels": [["0"] * 784]}, {}, TOKEN, 422,
                "other than numbers"),
    "out of range": ("application/json", {"pixels": [ZEROS, [0] * 783 + [256]]}, {}, TOKEN,
                     422, "pixels[1] has values outside 0-255"),
    "ragged pixels": ("application/json", {"pixels": [[[0, 0]] + [0] * 783]}, {}, TOKEN, 422,
                      "pixels[0] holds something other than numbers"),
    "true and false as pixels": ("application/json", {"pixels": [[True] * 392 + [0] * 392]},
                                 {}, TOKEN, 422, "holds true or false"),
    "nothing drawn": ("image/png", encoded(np.full((50, 50), 255, np.uint8), "PNG"), {}, TOKEN,
                      422, "the upload has nothing drawn on it"),
    "nothing drawn in JSON": ("application/json", {"pixels": [STROKE, ZEROS]}, {}, TOKEN, 422,
                              "pixels[1] has nothing drawn on it"),
    "a JPEG of a thousand scans": ("image/jpeg", many_scans(1000), {}, TOKEN, 400,
                                   "is a JPEG of 1,00"),
    "two IHDR chunks": ("image/png", A_PNG[:33] + A_PNG[8:33] + A_PNG[33:], {}, TOKEN, 400,
                        "second IHDR chunk"),
    "top_k too big": ("application/json", {"pixels": [STROKE]}, {"top_k": 11}, TOKEN, 422,
                      "top_k"),
    "top_k not a number": ("application/json", {"pixels": [STROKE]}, {"top_k": "x"}, TOKEN,
                           422, "top_k"),
}


@pytest.mark.parametrize("case", REQUESTS, ids=str)
def test_bad_requests_get_their_status_and_a_json_message(guarded, case):
    content_type, body, query, token, status, words = REQUESTS[case]
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    got, answer = post(guarded, body, content_type, token, **query)
    assert (got, set(answer)) == (status, {"error"})
    assert words in answer["error"]
    assert fetch(guarded + "healthz")[0] == 200


# --- explanations --------------------------------------------------------------------------

def test_explain_answers_each_image_with_its_label_probabilities_and_map(server, model,
                                                                        test_set):
    import mnist_gluon

    classifier = mnist_gluon.load(model)
    images = test_set.images[list(PICKED)]
    status, answer = post(server, pixels_json(images), "application/json", route="v1/explain")
    assert status == 200 and answer["method"] == "integrated_gradients"
    _, predicted = post(server, pixels_json(images), "application/json", top_k=10)
    expected = classifier.explain(images)
    for served, prediction, image, attribution in zip(
            answer["explanations"], predicted["predictions"], images, expected, strict=True):
        assert served["label"] == served["target"] == prediction["label"]
        ranked = sorted(range(10), key=lambda k: -served["probabilities"][k])
        assert ranked == [k["label"] for k in prediction["top_k"]]
        np.testing.assert_allclose(served["map"], attribution, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(served["image"], image)
    # an upload is explained as the model sees it: cropped and centred
    status, drawn = post(server, encoded(as_drawn(images[0]), "PNG"), "image/png",
                         route="v1/explain", method="smoothgrad", target=3)
    first = drawn["explanations"][0]
    assert status == 200 and drawn["method"] == "smoothgrad" and first["target"] == 3
    np.testing.assert_allclose(first["map"], classifier.explain(
        np.array(first["image"]), method="smoothgrad", target=3)[0], rtol=1e-4, atol=1e-5)


# Every body /v1/predict refuses, /v1/explain refuses alike; its own query is checked too.
EXPLAIN_REQUESTS = {name: case for name, case in REQUESTS.items() if "top_k" not in name}
EXPLAIN_REQUESTS.update({
    "target too big": ("application/json", {"pixels": [STROKE]}, {"target": 10}, TOKEN, 422,
                       "target"),
    "target not a number": ("application/json", {"pixels": [STROKE]}, {"target": "x"}, TOKEN,
                            422, "target"),
    "unknown method": ("application/json", {"pixels": [STROKE]}, {"method": "shap"}, TOKEN, 422,
                       "'integrated_gradients', 'gradient_x_input' or 'smoothgrad'"),
})


@pytest.mark.parametrize("case", EXPLAIN_REQUESTS, ids=str)
def test_explain_refuses_what_predict_refuses(guarded, case):
    content_type, body, query, token, status, words = EXPLAIN_REQUESTS[case]
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    got, answer = post(guarded, body, content_type, token, route="v1/explain", **query)
    assert (got, set(answer)) == (status, {"error"})
    assert words in answer["error"]
    assert fetch(guarded + "healthz")[0] == 200


def test_a_form_without_a_file_is_422(guarded):
    body = b'--b\r\nContent-Disposition: form-data; name="label"\r\n\r\n7\r\n--b--\r\n'
    status, answer = post(guarded, body, "multipart/form-data; boundary=b", TOKEN)
    assert status == 422 and "no file" in answer["error"]


def test_a_chunked_body_is_cut_off_at_the_limit(guarded):
    connection = http.client.HTTPConnection(urllib.parse.urlsplit(guarded).netloc, timeout=30)
    connection.request("POST", "/v1/predict", body=iter([bytes(30_000)] * 3), headers={
        "Content-Type": "image/png", "Authorization": f"Bearer {TOKEN}"}, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and "65,536" in json.loads(response.read())["error"]


def test_the_token_guards_the_api_but_not_health_page_or_metrics(guarded, test_set):
    assert fetch(guarded + "v1/model")[0] == 401
    assert fetch(guarded + "v1/model", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert post(guarded, pixels_json(test_set.images[:1]), "application/json", TOKEN)[0] == 200
    assert [fetch(guarded + path)[0] for path in ("healthz", "", "metrics")] == [200] * 3


@pytest.mark.parametrize("method,path,status", [("GET", "v1/predict", 405),
                                                ("DELETE", "v1/model", 405),
                                                ("GET", "../etc/passwd", 404),
                                                ("GET", "docs", 404)])
def test_unknown_paths_and_methods_are_json_errors(server, method, path, status):
    got, _, body = fetch(server + path, method)
    assert got == status and set(json.loads(body)) == {"error"}


def test_the_openapi_schema_survives_fuzzing_without_a_server_error(server):
    """schemathesis draws valid and invalid requests from /openapi.json for every
    operation; none may answer 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(server + "openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/v1/explain", "/v1/model",
                                              "/healthz"}
    answered = []
    for operation in operations:
        # the others have nothing to get wrong
        takes_input = operation.path in ("/v1/predict", "/v1/explain")
        for mode in [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * takes_input:
            @settings(max_examples=30, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                response = case.call(base_url=server.rstrip("/"), timeout=30)
                answered.append(response.status_code)
                assert response.status_code < 500, (case.as_curl_command(), response.text)

            fuzz()
    assert len(answered) > 120 and {200, 400, 422} <= set(answered)
    assert fetch(server + "healthz")[0] == 200


# --- the command line ---------------------------------------------------------------------

def serve_fails(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mnist-serve"), *args], capture_output=True, text=True,
                          timeout=120)


def test_it_listens_on_loopback_unless_told_otherwise(server):
    assert server.startswith("http://127.0.0.1:")


def test_a_missing_checkpoint_is_one_line_and_exit_2(tmp_path):
    result = serve_fails("--checkpoint", str(tmp_path / "nope.params"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--token", " "], "Invalid value for --token: the token is empty"),
    (["--port", "70000"], "Invalid value for '--port': 70000 is not in the range 0<=x<=65535"),
    (["--max-batch", "0"], "Invalid value for '--max-batch': 0 is not in the range x>=1"),
    (["--host", "no-such-host.invalid"], "--host no-such-host.invalid is not an address of "
                                         "this machine"),
    (["--host", "192.0.2.1"], "192.0.2.1:0 cannot be used (Cannot assign requested address)"),
])
def test_bad_options_are_one_line_and_exit_2(model, args, message):
    result = serve_fails("--checkpoint", str(model), "--port", "0", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_port_in_use_is_one_line_and_exit_2(model, server):
    port = urllib.parse.urlsplit(server).port
    result = serve_fails("--checkpoint", str(model), "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"mnist-serve: error: 127.0.0.1:{port} is in use; pass "
                                     "another --port (0 picks a free one)")


def test_sigterm_stops_the_server_cleanly_and_frees_the_port(model):
    with serving(model) as (url, process, log):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert not any("Traceback" in line for line in log), log
    port = urllib.parse.urlsplit(url).port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # nothing listens there any more


def test_a_png_the_decoder_refuses_is_a_400_not_a_label(server):
    """libpng refuses a side over a million pixels; OpenCV then returned uninitialised memory
    of the header's size, and the server a label computed from it."""
    buffer = io.BytesIO()
    Image.new("L", (1, 2_000_000), 255).save(buffer, format="PNG")  # 4 KB
    status, _, body = fetch(server + "v1/predict", "POST", buffer.getvalue(),
                            {"Content-Type": "image/png"})
    assert status == 400
    assert json.loads(body) == {"error": "the upload is 1 x 2000000 pixels; a side over "
                                         "1,000,000 pixels cannot be decoded"}


def test_deeply_nested_json_is_a_400_before_parsing_and_the_server_goes_on(server):
    """1,000 levels of brackets (2 KB) made the parser recurse into a RecursionError: a 500,
    and connections of good requests around it dropped."""
    status, _, body = fetch(server + "v1/predict", "POST", b"[" * 1000 + b"]" * 1000,
                            {"Content-Type": "application/json"})
    assert status == 400
    assert json.loads(body)["error"].startswith("the JSON nests 1000 levels deep")
    assert fetch(server + "healthz")[0] == 200


def test_the_json_checks_cost_time_linear_in_the_body_and_the_server_goes_on(server):
    """4 MB of escaped quotes: the depth check once re-scanned the body from every quote, and
    kept the event loop (and /healthz) busy for hours at this size."""
    status, _, body = fetch(server + "v1/predict", "POST", b'{"pixels": "' + b'\\"' * 2**20,
                            {"Content-Type": "application/json"})
    assert status == 400 and json.loads(body)["error"] == "the body is not valid JSON"
    assert fetch(server + "healthz")[0] == 200


def test_with_a_token_nothing_about_the_api_answers_without_it(guarded):
    """A bad query once got a 422 before the token was asked for, and /openapi.json described
    the API to anyone."""
    for method, path in (("POST", "v1/predict?top_k=0"), ("GET", "openapi.json"),
                         ("GET", "v1/model")):
        status, headers, _ = fetch(guarded + path, method, b"{}" if method == "POST" else None,
                                   {"Content-Type": "application/json"})
        assert (status, headers.get("www-authenticate")) == (401, "Bearer"), path
    status, _, body = fetch(guarded + "openapi.json", headers={
        "Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "/v1/predict" in json.loads(body)["paths"]
    status, _, _ = fetch(guarded + "v1/predict?top_k=0", "POST", b"{}", {
        "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    assert status == 422  # with the token, the query is checked


def test_a_client_that_leaves_mid_upload_is_its_own_event_not_a_500(model):
    """It used to be a 500 with a 61-line traceback, counted among the server's errors."""
    with serving(model) as (url, _, log):
        host, port = urllib.parse.urlsplit(url).netloc.split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
                         + b"Content-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
                         + b"\x89PNG" * 10)
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while 'status="499"' not in fetch(url + "metrics")[2].decode():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        metrics = fetch(url + "metrics")[2].decode()
        assert 'status="500"' not in metrics
    assert "Traceback" not in "".join(log)


def test_a_rebound_host_name_and_a_foreign_pages_post_are_refused(server):
    """DNS rebinding: another site's page whose name now points here sends its own Host; a
    page of another origin could post a form to the API."""
    status, _, body = fetch(server + "v1/model", headers={"Host": "evil.example"})
    assert status == 400 and "Host 'evil.example' is not served here" in json.loads(body)[
        "error"]
    form, media = multipart("image", "d.png", A_PNG)
    status, _, body = fetch(server + "v1/predict", "POST", form, {
        "Content-Type": media, "Origin": "http://evil.example"})
    assert (status, json.loads(body)["error"]) == (403, (
        "a POST from the page of http://evil.example is refused; mnist-serve --cors "
        "http://evil.example allows it"))
    own = server.rstrip("/")  # the draw-a-digit page's own origin
    status, _, _ = fetch(server + "v1/predict", "POST", form, {
        "Content-Type": media, "Origin": own})
    assert status == 200


def test_cors_lets_a_named_origin_post(model):
    with serving(model, "--cors", "http://app.example") as (url, _, _):
        form, media = multipart("image", "d.png", A_PNG)
        status, headers, _ = fetch(url + "v1/predict", "POST", form, {
            "Content-Type": media, "Origin": "http://app.example"})
        assert status == 200
        assert headers["access-control-allow-origin"] == "http://app.example"


def test_big_uploads_being_decoded_do_not_hold_up_small_requests(server, test_set):
    """A JSON image sent while eight 4096 x 4096 PNGs (26 KB each) wait to be decoded is
    answered sooner than one such PNG alone: it does not queue behind their decoding. (Both
    durations come from this run; the decoding of the eight takes several times one.)"""
    sheet = np.full((4096, 4096), 250, np.uint8)
    sheet[1000:3000, 1500:2500] = 20
    big = encoded(sheet, "png")
    started = time.perf_counter()
    assert post(server, big, "image/png")[0] == 200
    one_upload = time.perf_counter() - started

    parts = urllib.parse.urlsplit(server)
    uploads = []
    for _ in range(8):
        sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"image/png\r\nConnection: close\r\nContent-Length: "
                     + str(len(big)).encode() + b"\r\n\r\n" + big)
        uploads.append(sock)
    time.sleep(0.02)  # the server has them
    started = time.perf_counter()
    status, answer = post(server, pixels_json(test_set.images[:1]), "application/json")
    small_request = time.perf_counter() - started
    assert status == 200 and answer["predictions"][0]["label"] == test_set.labels[0]
    assert small_request < one_upload
    for sock in uploads:  # and every upload is answered
        with sock:
            assert b"".join(iter(lambda s=sock: s.recv(65536), b"")).startswith(
                b"HTTP/1.1 200 ")
