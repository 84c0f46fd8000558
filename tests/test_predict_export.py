"""From checkpoint to use: predicting on image files, exporting, INT8 and pictures."""

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import as_drawn, snapshot, write_idx
from mnist_gluon.cli import eval_command, export_command, predict_command, run
from mnist_gluon.data import DATASETS, read_split
from mnist_gluon.mxnet_compat import mx


@pytest.fixture(scope="module")
def test_set(mnist_dir):
    return read_split(DATASETS["mnist"], "test", mnist_dir, download=False)


def predictions(capsys, *args) -> tuple[int, list[dict], str]:
    code = run(predict_command, [*map(str, args), "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


# --- mnist-predict ---------------------------------------------------------------------------

def test_drawn_colour_and_inverted_images_of_any_size_get_the_digits_own_label(
        model, test_set, tmp_path, capsys):
    picked = range(12)
    code, raw, _ = predictions(capsys, "--checkpoint", model, *[
        write_array(tmp_path / f"raw{i}.npy", test_set.images[i]) for i in picked])
    assert code == 0
    for i in picked:
        Image.fromarray(as_drawn(test_set.images[i])).save(tmp_path / f"drawn{i:02d}.png")
        Image.fromarray(as_drawn(test_set.images[i])).save(tmp_path / f"drawn{i:02d}.jpg",
                                                           quality=90)
    code, drawn, _ = predictions(capsys, "--checkpoint", model, "--top-k", "2",
                                 *sorted(tmp_path.glob("drawn*")))
    assert code == 0 and len(drawn) == 24
    by_file = {Path(d["path"]).name: d for d in drawn}
    agree = [by_file[f"drawn{i:02d}.{ext}"]["label"] == raw[i]["label"]
             for i in picked for ext in ("png", "jpg")]
    assert sum(agree) >= 22, drawn  # the preprocessing gives back MNIST's form
    assert sum(r["label"] == test_set.labels[i] for i, r in zip(picked, raw, strict=True)) >= 11
    first = drawn[0]
    assert set(first) == {"path", "label", "top_k"} and len(first["top_k"]) == 2
    assert first["top_k"][0]["label"] == first["label"]
    assert first["top_k"][0]["probability"] >= first["top_k"][1]["probability"]


def write_array(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def test_a_28x28_grey_png_white_on_black_is_taken_as_it_is(model, test_set, tmp_path, capsys):
    Image.fromarray(test_set.images[0]).save(tmp_path / "seven.png")
    code, out, _ = predictions(capsys, "--checkpoint", model, tmp_path / "seven.png")
    assert code == 0 and out[0]["label"] == 7


def test_npy_stacks_and_idx_files_give_one_prediction_per_image(model, test_set, tmp_path,
                                                                 capsys):
    np.save(tmp_path / "floats.npy", test_set.images[:5].reshape(5, 784) / 255.0)
    write_idx(tmp_path / "five-idx3-ubyte", test_set.images[:5])
    code, out, _ = predictions(capsys, "--checkpoint", model, tmp_path / "floats.npy",
                               tmp_path / "five-idx3-ubyte")
    assert code == 0
    assert [(Path(o["path"]).name, o["index"]) for o in out] == (
        [("floats.npy", i) for i in range(5)] + [("five-idx3-ubyte", i) for i in range(5)])
    assert [o["label"] for o in out[:5]] == [o["label"] for o in out[5:]]
    assert [o["label"] for o in out[:5]] == test_set.labels[:5].tolist()


def test_a_folder_is_every_file_in_it_and_bad_files_are_reported_not_fatal(model, test_set,
                                                                           tmp_path, capsys):
    folder = tmp_path / "inbox"
    folder.mkdir()
    Image.fromarray(as_drawn(test_set.images[1])).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"not an image at all")
    np.save(folder / "c.npy", np.zeros((3, 5)))
    Image.fromarray(as_drawn(test_set.images[2])).save(folder / "d.jpg")
    code, out, err = predictions(capsys, "--checkpoint", model, folder)
    assert code == 1
    assert [Path(o["path"]).name for o in out] == ["a.png", "d.jpg"]
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert "b.png is not a PNG, JPEG or BMP image" in lines[0]
    assert "c.npy holds an array of shape (3, 5)" in lines[1]


def test_plain_output_is_one_line_per_image(model, test_set, tmp_path, capsys):
    np.save(tmp_path / "two.npy", test_set.images[:2])
    assert run(predict_command, ["--checkpoint", str(model), str(tmp_path / "two.npy")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    ranked = r"\(7 [01]\.\d{3}  \d [01]\.\d{3}  \d [01]\.\d{3}\)"
    assert len(lines) == 2
    assert re.fullmatch(re.escape(f"{tmp_path / 'two.npy'}[0]: 7  ") + ranked, lines[0])


# --- mnist-export ------------------------------------------------------------------------------

def checkpoint_logits(model: Path, pixels: np.ndarray) -> np.ndarray:
    from mnist_gluon.predict import load_classifier

    classifier, _ = load_classifier(model)
    return classifier(mx.nd.array(pixels)).asnumpy()


def test_the_mxnet_export_loads_back_and_gives_the_checkpoints_outputs(model, test_set,
                                                                       tmp_path):
    out = tmp_path / "export"
    assert run(export_command, ["--checkpoint", str(model), "--out", str(out)]) == 0
    net = mx.gluon.SymbolBlock.imports(str(out / "mnist-mlp-symbol.json"), ["data"],
                                       str(out / "mnist-mlp-0000.params"))
    pixels = test_set.images[:500].reshape(500, 784).astype(np.float32)
    np.testing.assert_allclose(net(mx.nd.array(pixels)).asnumpy(),
                               checkpoint_logits(model, pixels), rtol=1e-6, atol=1e-6)
    described = json.loads((out / "model.json").read_text())
    assert described["input"]["shape"] == [None, 784] and described["input"]["range"] == [0, 255]
    assert described["classes"] == [str(i) for i in range(10)]
    assert set(described["files"]) == {"mnist-mlp-symbol.json", "mnist-mlp-0000.params"}


def test_the_onnx_export_agrees_with_the_checkpoint_on_the_whole_test_set(model, test_set,
                                                                          tmp_path):
    import onnx
    import onnxruntime

    out = tmp_path / "onnx"
    assert run(export_command, ["--checkpoint", str(model), "--format", "onnx",
                                "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["mnist-mlp.onnx", "model.json"]
    graph = onnx.load(str(out / "mnist-mlp.onnx")).graph
    assert [i.name for i in graph.input] == ["data"]  # weights are initializers, not inputs
    pixels = test_set.images.reshape(-1, 784).astype(np.float32)
    session = onnxruntime.InferenceSession(str(out / "mnist-mlp.onnx"))
    logits = session.run(None, {"data": pixels})[0]
    expected = checkpoint_logits(model, pixels)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    assert np.mean(logits.argmax(axis=1) == expected.argmax(axis=1)) >= 0.999


def test_int8_export_reports_its_accuracy_and_loads_back(model, mnist_dir, test_set, tmp_path):
    out = tmp_path / "int8"
    exported = subprocess.run(
        [str(Path(sys.executable).parent / "mnist-export"), "--checkpoint", str(model), "--out",
         str(out), "--quantize", "int8", "--data-root", str(mnist_dir)],
        capture_output=True, text=True, timeout=600)
    assert exported.returncode == 0
    assert "int8 on 10000 test images: accuracy 0." in exported.stdout
    assert exported.stderr == ""  # neither MKLDNN's log line nor MXNet's dtype warning
    figures = json.loads((out / "model.json").read_text())["int8"]
    assert figures["int8_accuracy"] >= figures["float32_accuracy"] - 0.01
    net = mx.gluon.SymbolBlock.imports(str(out / "mnist-mlp-int8-symbol.json"), ["data"],
                                       str(out / "mnist-mlp-int8-0000.params"))
    logits = net(mx.nd.array(test_set.images.reshape(-1, 784).astype(np.float32))).asnumpy()
    assert np.mean(logits.argmax(axis=1) == test_set.labels) == pytest.approx(
        figures["int8_accuracy"], abs=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx", "--quantize", "int8"], "use it with --format mxnet"),
    (["--format", "tflite"], "Invalid value for '--format'"),
])
def test_bad_export_requests_are_one_line_exit_2(model, tmp_path, capsys, args, message):
    code = run(export_command, ["--checkpoint", str(model), "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_an_existing_export_is_not_overwritten_without_force(model, tmp_path, capsys):
    out = tmp_path / "export"
    assert run(export_command, ["--checkpoint", str(model), "--out", str(out)]) == 0
    before = snapshot(out)
    assert run(export_command, ["--checkpoint", str(model), "--out", str(out)]) == 2
    assert "already holds an export" in capsys.readouterr().err
    assert snapshot(out) == before
    assert run(export_command, ["--checkpoint", str(model), "--out", str(out), "--force"]) == 0


# --- pictures ----------------------------------------------------------------------------------

def test_eval_plot_writes_the_confusion_matrix_and_the_worst_mistakes(model, mnist_dir,
                                                                      tmp_path):
    assert run(eval_command, ["--checkpoint", str(model), "--data-root", str(mnist_dir),
                              "--plot", str(tmp_path / "plots"), "--json"]) == 0
    assert png_size(tmp_path / "plots/confusion.png") == (700, 600)
    assert png_size(tmp_path / "plots/mistakes.png") == (800, 880)


def test_training_ends_with_curves_png(model):
    assert png_size(model.parent / "curves.png") == (1000, 400)


def test_without_matplotlib_the_commands_say_how_to_install_it(model, mnist_dir, tmp_path):
    import subprocess
    import sys

    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "matplotlib.py").write_text("raise ImportError('matplotlib is not installed')\n")
    shutil.copy(model, tmp_path / "m.params")
    shutil.copy(model.with_suffix(".json"), tmp_path / "m.json")
    probe = ("import sys; from mnist_gluon import cli; sys.exit(cli.run(cli.eval_command, "
             f"['--checkpoint', {str(tmp_path / 'm.params')!r}, '--data-root', "
             f"{str(mnist_dir)!r}, '--plot', {str(tmp_path / 'plots')!r}]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={"PYTHONPATH": str(blocker), "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "accuracy 0.9" in result.stdout
    assert "pip install 'mnist-gluon[plot]'" in result.stderr
    assert not (tmp_path / "plots").exists()
