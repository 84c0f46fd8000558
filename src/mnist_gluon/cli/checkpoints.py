"""mnist-eval, mnist-predict, mnist-export and mnist-serve: the commands that use a checkpoint."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import click

from .. import engine
from ..data import DATASETS
from ..explain import METHODS
from ..serving.settings import ConnectionLimits, Limits, ServeOptions
from .options import (
    CONTEXT,
    checkpoint_argument,
    checkpoint_option,
    data_root_option,
    debug_option,
    device_option,
    normalize_option,
    the_checkpoint,
    version,
)


@click.command("mnist-eval", context_settings=CONTEXT)
@checkpoint_argument
@checkpoint_option
@data_root_option("Folder holding the test set's IDX files.  "
                  "[default: the checkpoint's, else $MXNET_HOME/datasets/<name>]")
@click.option("--dataset", type=click.Choice(list(DATASETS)), default=None,
              help="Dataset to test on.  [default: the one the checkpoint was trained on]")
@device_option()
@normalize_option
@click.option("--no-download", is_flag=True, help="Never download missing data files.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="Also write confusion.png, mistakes.png (the most confidently wrong test "
                   "images) and mistakes-explained.png (what each of them looked at) into this "
                   "folder; needs the plot extra.")
@debug_option
@version
def eval_command(checkpoint_argument, checkpoint_option, data_root, dataset, device,
                 bare_normalization, no_download, as_json, plot_dir):
    """Evaluate a checkpoint on the test set: accuracy, loss, per-class precision, recall and
    F1, macro averages and the confusion matrix. CHECKPOINT: as --checkpoint."""
    from ..files import writable_folder
    from ..inference.evaluate import evaluate
    from ..inference.plots import missing

    checkpoint_path = the_checkpoint(checkpoint_option, checkpoint_argument)
    if plot_dir is not None and missing() is None:  # before the work, not after it
        writable_folder(Path(plot_dir), "--plot folder")
    report = evaluate(checkpoint_path, dataset, data_root=data_root, device=device,
                      normalization=bare_normalization, download=not no_download)
    if report.foreign:
        click.echo(f"mnist-eval: warning: {checkpoint_path} was trained on {report.trained_on}, "
                   f"not {report.dataset}; these figures are for images it never learned",
                   err=True)
    click.echo(json.dumps(report.to_dict()) if as_json else str(report))
    if plot_dir is not None:
        if (note := missing()) is not None:
            click.echo(f"mnist-eval: no pictures written; {note}", err=True)
            return
        *pictures, last = report.plot(plot_dir)
        click.echo(f"wrote {', '.join(map(str, pictures))} and {last}", err=True)


@click.command("mnist-predict", context_settings=CONTEXT)
@checkpoint_option
@click.argument("inputs", nargs=-1, required=True, type=click.Path(),
                metavar="[CHECKPOINT] INPUTS...")
@click.option("--top-k", "top_k", type=click.IntRange(1, None), default=3, show_default=True,
              help="How many classes to show per image.")
@device_option()
@normalize_option
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list: one object per image with path, label and top_k.")
@click.option("--explain", "explain_dir", type=click.Path(file_okay=False), default=None,
              metavar="DIR", help="Also write a heatmap PNG per image into DIR "
              "(NAME.explained.png): the digit, red where its ink raised the predicted class's "
              "logit, blue where it lowered it.")
@click.option("--method", type=click.Choice(METHODS), default=METHODS[0], show_default=True,
              help="How --explain attributes the logit to the pixels.")
@debug_option
@version
def predict_command(checkpoint_option, inputs, top_k, device, bare_normalization, as_json,
                    explain_dir, method):
    """Classify images: PNG/JPEG/BMP files of any size (a dark digit on light paper is
    inverted, cropped and centred the way MNIST's digits are), .npy arrays and IDX files of
    28x28 images, or folders of them. A file that cannot be read is reported and skipped;
    the exit status is then 1, or 2 when no file could be read. Without --checkpoint, the
    first argument is the checkpoint."""
    from ..errors import DataError
    from ..files import writable_folder
    from ..inference.classifier import load
    from ..inference.images import expand, load_inputs
    from ..inference.predict import explain_predictions, predict

    if checkpoint_option is None:
        if len(inputs) < 2:
            raise click.UsageError("give the checkpoint and then the images, e.g. "
                                   "mnist-predict runs/base digit.png (or --checkpoint PATH)")
        checkpoint_option, inputs = inputs[0], inputs[1:]
    checkpoint_path = checkpoint_option
    if explain_dir is not None:  # before the work, not after it
        explain_dir = writable_folder(Path(explain_dir), "--explain folder")
    classifier = load(checkpoint_path, device, bare_normalization)
    paths = expand([Path(p) for p in inputs])
    if not paths:
        raise DataError(f"no files to classify in {', '.join(inputs)}")
    results, failed, names = [], 0, set()
    for path in paths:
        try:
            read = load_inputs(path)
            predicted = predict(classifier, read, top_k)
            if explain_dir is not None:
                explain_predictions(classifier, read, predicted, explain_dir, method, names)
            results.extend(predicted)
        except DataError as error:
            if len(paths) == 1:
                raise  # nothing else to classify: an error, exit status 2
            failed += 1
            click.echo(f"mnist-predict: skipped: {error}", err=True)
    if failed == len(paths):
        return 2
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results]))
    else:
        for r in results:
            where = r.path + (f"[{r.index}]" if r.index is not None else "")
            ranked = "  ".join(f"{label} {p:.3f}" for label, p in r.top_k)
            click.echo(f"{where}: {r.label}  ({ranked})")
    if explain_dir is not None:
        click.echo(f"wrote {len(results)} heatmaps ({method}) into {explain_dir}", err=True)
    return 1 if failed else 0


@click.command("mnist-export", context_settings=CONTEXT)
@checkpoint_argument
@checkpoint_option
@click.option("--format", "fmt", type=click.Choice(["mxnet", "onnx", "compressed"]),
              default="mxnet", show_default=True,
              help="mxnet: *-symbol.json + *-0000.params; onnx: one .onnx; compressed: one "
                   "model.mnc (pruned weights, shared values, LZMA), which mnist-eval, "
                   "mnist-predict and mnist-serve load.")
@click.option("--out", type=click.Path(), required=True, help="Folder to write the export to.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="INT8 with MXNet's quantization (MKLDNN), calibrated on training images; "
                   "reports accuracy and speed against float on the test set.")
@data_root_option("Folder with the dataset's IDX files (int8 calibration and check).")
@normalize_option
@click.option("--force", is_flag=True, help="Replace an export already in --out.")
@debug_option
@version
def export_command(checkpoint_argument, checkpoint_option, fmt, out, quantize, data_root,
                   bare_normalization, force):
    """Export a checkpoint for serving. The exported model takes raw pixels (float32, 0-255,
    N x 784) with the normalisation inside the graph, and returns logits; model.json beside
    it describes input, output and class names. CHECKPOINT: as --checkpoint."""
    from ..inference.export import export

    checkpoint_path = the_checkpoint(checkpoint_option, checkpoint_argument)
    exported = export(checkpoint_path, Path(out), fmt, quantize, data_root=data_root,
                      normalization=bare_normalization, force=force)
    for path in exported.files:
        click.echo(f"wrote {path}" + (f" ({exported.figures['bytes']:,} bytes)"
                                      if fmt == "compressed" else ""))
    if quantize:
        f = exported.figures
        click.echo(f"int8 on {f['images']} test images: accuracy {f['int8_accuracy']:.4f} "
                   f"(float32 {f['float32_accuracy']:.4f}); {f['int8_ms']:.1f} ms against "
                   f"{f['float32_ms']:.1f} ms, {f['speedup']:.2f}x faster")


MAX_TIMEOUT_S = 86_400.0  # a day: asyncio's timers and select() take no more than that safely


@click.command("mnist-serve", context_settings=CONTEXT)
@checkpoint_argument
@checkpoint_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 opens the server to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--token", envvar="MNIST_SERVE_TOKEN", default=None,
              help="Require 'Authorization: Bearer TOKEN' on /v1/* and /openapi.json; "
                   "better passed in "
                   "$MNIST_SERVE_TOKEN, which other users cannot see in ps.  [default: none]")
@click.option("--max-body", "max_body", type=click.IntRange(1024, None),
              default=Limits.max_body_bytes, show_default=True,
              help="Largest request body in bytes; larger ones get 413.")
@click.option("--max-in-flight", "max_in_flight", type=click.IntRange(1024, None),
              default=Limits.max_bytes_in_flight, show_default=True, metavar="BYTES",
              help="Bytes of request bodies received at once, all connections together; "
                   "past it, a request gets 503 and Retry-After.")
@click.option("--max-images", type=click.IntRange(1, None), default=Limits.max_images,
              show_default=True, help="Most images in one JSON request; more get 413.")
@click.option("--max-batch", type=click.IntRange(1, None), default=ServeOptions.max_batch,
              show_default=True,
              help="Answer up to this many waiting images in one forward pass (dynamic "
                   "micro-batching: 1.65x the requests/s of JSON pixels from 16 clients, "
                   "BENCHMARKS.md); 1 "
                   "answers each request on its own.")
@click.option("--max-wait-ms", type=click.FloatRange(0, 1000),
              default=ServeOptions.max_wait_ms, show_default=True,
              help="How long a batch waits for more requests; 0 takes only those already "
                   "waiting, so a lone request is never delayed.")
@device_option()
@normalize_option
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A host name the server answers to; repeatable.  [default: the loopback "
                   "names when bound to loopback, else any]")
@click.option("--cors", multiple=True, metavar="ORIGIN",
              help="Let pages of this origin (e.g. https://app.example) POST to the API; "
                   "repeatable.  [default: same origin only]")
@click.option("--header-timeout", type=click.FloatRange(0, MAX_TIMEOUT_S, min_open=True),
              default=ConnectionLimits.header_s, show_default=True, metavar="SECONDS",
              help="A request's headers must arrive within this time of its first byte.")
@click.option("--body-timeout", type=click.FloatRange(0, MAX_TIMEOUT_S, min_open=True),
              default=ConnectionLimits.body_s, show_default=True, metavar="SECONDS",
              help="A request's body must arrive within this time of its headers.")
@click.option("--keep-alive-timeout", type=click.FloatRange(0, MAX_TIMEOUT_S, min_open=True),
              default=ConnectionLimits.keep_alive_s, show_default=True, metavar="SECONDS",
              help="An idle connection is closed after this time.")
@click.option("--max-connections", type=click.IntRange(1, None),
              default=ConnectionLimits.max_connections, show_default=True,
              help="Connections open at once (fewer if the file limit is lower); at the cap a "
                   "new one displaces the one waiting longest without a whole request.")
@click.option("--access-log", is_flag=True, help="Log every request on stderr.")
@debug_option
@version
def serve_command(checkpoint_argument, checkpoint_option, host, port, token, max_body,
                  max_in_flight, max_images, max_batch, max_wait_ms, device, bare_normalization,
                  allowed_hosts, cors, header_timeout, body_timeout, keep_alive_timeout,
                  max_connections, access_log):
    """Serve a checkpoint over HTTP: POST /v1/predict (an image upload, or JSON pixels for a
    batch), GET /v1/model, /healthz and /metrics (Prometheus), and at / a page to draw a digit
    on. Needs the serve extra (`make train` installs it). CHECKPOINT: as --checkpoint."""
    checkpoint_path = the_checkpoint(checkpoint_option, checkpoint_argument)
    if token is not None and not token.strip():
        raise click.BadParameter("the token is empty", param_hint="--token")
    missing = [name for name in ("fastapi", "uvicorn", "prometheus_client", "multipart")
               if importlib.util.find_spec(name) is None]
    if missing:
        from ..errors import install_command

        raise click.UsageError(f"mnist-serve needs {', '.join(missing)}: "
                               f"{install_command('serve')}")
    # One OpenMP thread: the event loop needs the other core.
    engine.choose(engine.inference_settings(device, threads=1))
    from ..serving.app import serve_checkpoint

    say = lambda text: click.echo(f"mnist-serve: {text}", err=True)  # noqa: E731
    limits = dataclasses.replace(Limits(), max_body_bytes=max_body, max_images=max_images,
                                 max_bytes_in_flight=max_in_flight)
    connections = ConnectionLimits(header_timeout, body_timeout, keep_alive_timeout,
                                   max_connections)
    options = ServeOptions(token, limits, max_batch, max_wait_ms, tuple(allowed_hosts),
                           tuple(cors), connections)
    serve_checkpoint(Path(checkpoint_path), host, port, options, device, bare_normalization,
                     access_log, say)

