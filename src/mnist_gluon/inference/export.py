"""Export a checkpoint for serving: MXNet symbol + params, ONNX, an INT8 MXNet graph, or
one compressed file (compression.mnc) that mnist-gluon's own commands load.

Every export takes raw pixel values (float32, 0-255, N x 784, a white digit on black, rows of
a 28 x 28 image) and returns logits: the normalisation is folded into the first layer, so a
client needs nothing but the files. `model.json` beside them says so.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data import DATASETS, Normalization
from ..errors import ConfigError, OutputError
from ..files import check_path_names, commit_files, sha256_of, staging_folder
from .classifier import checkpoint_split, load

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

FORMATS = ("mxnet", "onnx", "compressed")
QUANTIZATIONS = ("int8",)
ONNX_OPSET = 13  # the newest opset MXNet 1.9.1's exporter has translations for


@dataclass
class Exported:
    """What `export` wrote: its files (model.json last), model.json's content, and with int8
    its accuracy and speed against float32 on the test set."""

    files: list[Path]
    description: dict
    figures: dict = field(default_factory=dict)


def export(checkpoint: str | Path, out: str | Path, format: str = "mxnet",
           quantize: str | None = None, *, data_root: str | None = None,
           normalization: Normalization | tuple[float, float] | None = None,
           force: bool = False) -> Exported:
    """Export a checkpoint for serving, as mnist-export does: `format` mxnet (a symbol file and
    its parameters) or onnx (one .onnx file), into the folder `out`, with model.json beside;
    these take raw pixels (float32, 0-255, N x 784) and return logits. Or `format`
    compressed: one file, `out/model.mnc`, the checkpoint's weights through per-layer
    codebooks with its pruned weights left out, which `load`, `evaluate` and the commands take
    as they take a checkpoint.
    `quantize="int8"` exports MXNet's INT8 graph, calibrated on 5,000 training images and
    checked on the test set (both found under `data_root`, by default where the run found
    them). `force` replaces an export already in `out`."""
    if format not in FORMATS:
        raise ConfigError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"--quantize {quantize!r}: choose {', '.join(QUANTIZATIONS)}, or "
                          "leave it out for float32")
    if quantize is not None and format != "mxnet":
        raise ConfigError("--quantize int8 exports an MXNet graph; use it with --format mxnet")
    check_path_names(Path(out), "output folder")
    classifier = load(checkpoint, "cpu", normalization)
    if format == "compressed":
        return export_compressed(classifier.checkpoint, Path(out), force)
    stem = f"mnist-{classifier.architecture.kind}"  # mnist-mlp, mnist-lenet
    calibration = test = None
    if quantize:
        calibration, test = quantization_data(classifier.checkpoint, data_root)
    out = Path(out)
    prepare_out(out, force)
    # Everything is written in a hidden folder inside `out` first, and renamed into place only
    # once all of it is whole: a full disk leaves no truncated file under a final name.
    with staging_folder(out) as staging:
        if quantize == "int8":
            network = quantize_int8(classifier.pixel_net, calibration)
            prefix = staging / f"{stem}-int8"
        else:
            network, prefix = classifier.pixel_net, staging / stem
        files = export_mxnet(network, prefix)
        if format == "onnx":
            files = [export_onnx(*files, staging / f"{stem}.onnx")]
        figures = compare(classifier.pixel_net, network, *test) if quantize else {}
        description = model_description(classifier.checkpoint, format, quantize, files, figures)
        (staging / "model.json").write_text(json.dumps(description, indent=2) + "\n")
        files.append(staging / "model.json")  # last: an export is complete once it is there
        commit_files([(path, out / path.name) for path in files])
    return Exported([out / path.name for path in files], description, figures)


def export_compressed(checkpoint: Checkpoint, out: Path, force: bool) -> Exported:
    """`out/model.mnc`: the checkpoint's pruned weights through per-layer codebooks, its
    biases, normalisation and classes, in one file (compression.mnc)."""
    from ..compression.mnc import encode, read_compressed
    from ..files import is_compressed
    from .sources import COMPRESSED

    if is_compressed(checkpoint.params_path):
        raise ConfigError(f"{checkpoint.params_path} is compressed already; pass the "
                          "checkpoint it was exported from")
    content = encode(checkpoint)
    prepare_out(out, force, COMPRESSED)
    target = out / COMPRESSED
    with staging_folder(out) as staging:
        (staging / COMPRESSED).write_bytes(content)
        commit_files([(staging / COMPRESSED, target)])
    description = read_compressed(target).exported
    return Exported([target], description, {"bytes": len(content)})


def quantization_data(checkpoint: Checkpoint, data_root: str | None):
    """5,000 training images to calibrate on, and the test set to check the result with."""
    train = checkpoint_split(checkpoint, "train", data_root)
    test = checkpoint_split(checkpoint, "test", data_root)
    calibration = train.images[:5000].reshape(-1, 784)
    return calibration, (test.images.reshape(-1, 784).astype("float32"), test.labels)


def prepare_out(out: Path, force: bool, written: str = "model.json") -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} is a file, not a folder; pass --out DIR")
    if (out / written).exists() and not force:
        raise OutputError(f"{out} already holds an export ({written}); pass --force to "
                          "replace it, or --out DIR for a new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"output folder {out} cannot be created ({error.strerror}); pass "
                          "--out DIR somewhere you can write") from None


@contextlib.contextmanager
def untyped_input_allowed():
    """MXNet cannot infer the input's dtype from the parameters alone, and warns on every
    export and quantization; the input is float32 pixels, as model.json records."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Cannot decide type", UserWarning)
        yield


def export_mxnet(network, prefix: Path) -> list[Path]:
    from ..mxnet_compat import mx

    network.hybridize(static_alloc=True, static_shape=True)
    network(mx.nd.zeros((1, 784)))  # the graph is traced on a first call
    with untyped_input_allowed():
        network.export(str(prefix), epoch=0)
    return [prefix.with_name(prefix.name + "-symbol.json"),
            prefix.with_name(prefix.name + "-0000.params")]


def export_onnx(symbol_file: Path, params_file: Path, onnx_file: Path) -> Path:
    try:
        import onnx

        from ..mxnet_compat import onnx_exporter

        mx_onnx = onnx_exporter()
    except ImportError:
        from ..errors import install_command

        raise ConfigError(f"ONNX export needs the onnx extra: {install_command('onnx')}"
                          ) from None
    # A None inside the plain input shape crashes the exporter; a dynamic batch is declared
    # this way instead.
    mx_onnx.export_model(str(symbol_file), str(params_file), [(1, 784)], [np.float32],
                         str(onnx_file), dynamic=True, dynamic_input_shapes=[(None, 784)])
    model = onnx.load(str(onnx_file))
    # The exporter stamps onnx's newest opset and IR version, which an older onnxruntime
    # refuses, though MXNet 1.9.1 translates to opset 13 at the newest: the model says what
    # it holds, and so loads in any onnxruntime since 1.8.
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = ONNX_OPSET
    model.ir_version = onnx.helper.find_min_ir_version_for(model.opset_import)
    # The exporter lists the weights as graph inputs too; onnxruntime then warns on every load
    # and cannot fold them as constants. Only the pixels are an input.
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_file))
    return onnx_file


def quantize_int8(classifier, calibration: np.ndarray):
    """MXNet's own INT8 quantization (MKLDNN), calibrated on training images (min/max)."""
    from ..mxnet_compat import mx

    if calibration is None or not len(calibration):
        raise ConfigError("int8 needs calibration images; the training split was not found")
    batches = mx.io.NDArrayIter(data=calibration.astype(np.float32), batch_size=500,
                                last_batch_handle="discard")
    with untyped_input_allowed():
        return mx.contrib.quantization.quantize_net_v2(
            classifier, quantized_dtype="auto", quantize_mode="full", calib_data=batches,
            calib_mode="naive", num_calib_examples=len(calibration) // 500 * 500, ctx=mx.cpu())


def compare(float_net, int8_net, pixels: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy and inference time of both networks on the same images, one batch each."""
    from ..mxnet_compat import mx

    data = mx.nd.array(pixels, dtype="float32")
    figures = {}
    for name, network in (("float32", float_net), ("int8", int8_net)):
        for _ in range(3):
            network(data).wait_to_read()
        times = []
        for _ in range(10):
            started = time.perf_counter()
            logits = network(data).asnumpy()
            times.append(time.perf_counter() - started)
        figures[f"{name}_accuracy"] = float(np.mean(logits.argmax(axis=1) == labels))
        figures[f"{name}_ms"] = float(np.median(times) * 1000)
    figures["speedup"] = figures["float32_ms"] / figures["int8_ms"]
    figures["images"] = len(labels)
    return figures


def model_description(checkpoint: Checkpoint, fmt: str, quantize: str | None,
                      files: list[Path], figures: dict) -> dict:
    """model.json: what the exported model takes and returns, and where it came from."""
    dataset = checkpoint.dataset
    classes = list(DATASETS[dataset].class_names)
    return {
        "format": fmt + ("-int8" if quantize else ""),
        "files": {path.name: sha256_of(path) for path in files},
        "input": {"name": "data", "shape": [None, 784], "dtype": "float32", "range": [0, 255],
                  "layout": "28 x 28 pixels row by row, a white digit on black, as in MNIST",
                  "normalization": "inside the graph (folded into the first layer)"},
        "output": {"shape": [None, len(classes)], "meaning": "logits; softmax gives "
                   "probabilities"},
        "classes": classes,
        "architecture": {k: getattr(checkpoint.architecture, k)
                         for k in ("kind", "inputs", "hidden", "activation", "classes",
                                   "channels")},
        "checkpoint": {"path": str(checkpoint.params_path),
                       "sha256": sha256_of(checkpoint.params_path),
                       "dataset": dataset,
                       "epoch": checkpoint.sidecar.epoch if checkpoint.sidecar else None},
        **({"int8": figures} if figures else {}),
    }
