"""mnist-export: MXNet, ONNX and INT8 exports, and what they refuse."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mnist_gluon.cli import export_command, run
from mnist_gluon.mxnet_compat import mx
from support import BIN, snapshot, tiny_disk, unwritable


@pytest.fixture(params=["mlp", "lenet"])
def exported(request):
    """Each kind of model, trained for real, and the name its export files start with."""
    fixture = "model" if request.param == "mlp" else "lenet_model"
    return request.getfixturevalue(fixture), f"mnist-{request.param}"


def checkpoint_logits(model: Path, pixels: np.ndarray) -> np.ndarray:
    from mnist_gluon.inference.classifier import load

    return load(model).pixel_net(mx.nd.array(pixels)).asnumpy()


def test_the_mxnet_export_loads_back_and_gives_the_checkpoints_outputs(exported, test_set,
                                                                       tmp_path):
    model, prefix = exported
    out = tmp_path / "export"
    assert run(export_command, ["--checkpoint", str(model), "--out", str(out)]) == 0
    net = mx.gluon.SymbolBlock.imports(str(out / f"{prefix}-symbol.json"), ["data"],
                                       str(out / f"{prefix}-0000.params"))
    pixels = test_set.images[:500].reshape(500, 784).astype(np.float32)
    np.testing.assert_allclose(net(mx.nd.array(pixels)).asnumpy(),
                               checkpoint_logits(model, pixels), rtol=1e-6, atol=1e-6)
    described = json.loads((out / "model.json").read_text())
    assert described["input"]["shape"] == [None, 784] and described["input"]["range"] == [0, 255]
    assert described["classes"] == [str(i) for i in range(10)]
    assert set(described["files"]) == {f"{prefix}-symbol.json", f"{prefix}-0000.params"}


def test_the_onnx_export_agrees_with_the_checkpoint_on_the_whole_test_set(exported, test_set,
                                                                          tmp_path):
    model, prefix = exported
    import onnx
    import onnxruntime

    out = tmp_path / "onnx"
    assert run(export_command, ["--checkpoint", str(model), "--format", "onnx",
                                "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{prefix}.onnx", "model.json"]
    graph = onnx.load(str(out / f"{prefix}.onnx")).graph
    assert [i.name for i in graph.input] == ["data"]  # weights are initializers, not inputs
    pixels = test_set.images.reshape(-1, 784).astype(np.float32)
    session = onnxruntime.InferenceSession(str(out / f"{prefix}.onnx"))
    logits = session.run(None, {"data": pixels})[0]
    expected = checkpoint_logits(model, pixels)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    assert np.mean(logits.argmax(axis=1) == expected.argmax(axis=1)) >= 0.999


def test_int8_export_reports_its_accuracy_and_loads_back(exported, mnist_dir, test_set,
                                                         tmp_path):
    model, prefix = exported
    out = tmp_path / "int8"
    exported = subprocess.run(
        [str(BIN / "mnist-export"), "--checkpoint", str(model), "--out",
         str(out), "--quantize", "int8", "--data-root", str(mnist_dir)],
        capture_output=True, text=True, timeout=600)
    assert exported.returncode == 0
    assert "int8 on 10000 test images: accuracy 0." in exported.stdout
    assert exported.stderr == ""  # neither MKLDNN's log line nor MXNet's dtype warning
    figures = json.loads((out / "model.json").read_text())["int8"]
    assert figures["int8_accuracy"] >= figures["float32_accuracy"] - 0.01
    pixels = test_set.images.reshape(-1, 784).astype(np.float32)
    evaluated = np.mean(checkpoint_logits(model, pixels).argmax(axis=1) == test_set.labels)
    assert figures["float32_accuracy"] == pytest.approx(evaluated, abs=1e-9)  # mnist-eval's
    net = mx.gluon.SymbolBlock.imports(str(out / f"{prefix}-int8-symbol.json"), ["data"],
                                       str(out / f"{prefix}-int8-0000.params"))
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


@pytest.mark.parametrize("fmt", ["mxnet", "onnx"])
def test_an_export_onto_a_full_disk_leaves_no_file_under_a_final_name(model, tmp_path, fmt):
    """The parameters (400 KB) do not fit: a truncated .params and a symbol file were left
    under their final names."""
    with tiny_disk(tmp_path / "disk", "200k") as disk:
        out = disk / "export"
        done = subprocess.run([str(BIN / "mnist-export"), "--checkpoint", str(model), "--out",
                               str(out), "--format", fmt], capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert done.stderr == (f"mnist-export: error: cannot write into {out}: the disk "
                               "holding it is full; free some space and run the command "
                               "again\n")
        assert list(out.iterdir()) == []


def test_an_export_into_a_read_only_folder_is_one_line(model, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    with unwritable(out):
        done = subprocess.run([str(BIN / "mnist-export"), "--checkpoint", str(model), "--out",
                               str(out)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith(f"mnist-export: error: cannot write into {out} (")
    assert done.stderr.count("\n") == 1 and list(out.iterdir()) == []


def test_mnist_exports_own_model_is_read_with_its_recorded_normalisation_not_as_bare(
        exported, mnist_dir, tmp_path):
    """eval on the export's .params scored 8.92%: it was read as a bare network of
    unnormalised input."""
    import mnist_gluon

    model, prefix = exported
    out = tmp_path / "export"
    assert run(export_command, ["--checkpoint", str(model), "--out", str(out)]) == 0
    expected = mnist_gluon.evaluate(model, data_root=str(mnist_dir)).accuracy
    for given in (out, out / f"{prefix}-0000.params"):
        done = subprocess.run([str(BIN / "mnist-eval"), str(given), "--data-root",
                               str(mnist_dir), "--json"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert abs(json.loads(done.stdout)["accuracy"] - expected) <= 2e-4
    assert mnist_gluon.load(out).predict(np.zeros((1, 784)) + np.eye(1, 784) * 255) is not None
    done = subprocess.run([str(BIN / "mnist-eval"), str(out), "--normalize", "0,1"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "drop --normalize" in done.stderr


def test_files_that_are_not_a_model_to_score_are_named_for_what_they_are(model, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for suffix in (".params", ".json"):
        shutil.copy(model.with_suffix(suffix), run_dir / f"best{suffix}")
    (run_dir / "best.states").write_bytes(b"optimizer state")
    out = tmp_path / "int8"
    (out).mkdir()
    (out / "mnist-mlp-int8-0000.params").write_bytes(b"int8")
    (out / "model.json").write_text(json.dumps({
        "format": "mxnet-int8", "files": {"mnist-mlp-int8-0000.params": "0"},
        "checkpoint": {"path": "runs/base/best.params"}}))
    cases = {
        run_dir / "best.states": "is a checkpoint's optimizer state (it resumes a run); pass "
                                 f"its parameter file, {run_dir / 'best.params'}",
        out / "model.json": "is mnist-export's description of the model beside it; pass its "
                            f"folder, {out}",
        out: "is mnist-export's mxnet-int8 model, which mnist-gluon does not load; pass the "
             "checkpoint it was exported from (runs/base/best.params)",
        tmp_path / "nothing": "does not exist",
    }
    (tmp_path / "nothing").mkdir()
    cases[tmp_path / "nothing"] = "is a folder that holds no run (best.params) and no export"
    for given, words in cases.items():
        done = subprocess.run([str(BIN / "mnist-eval"), str(given)], capture_output=True,
                              text=True)
        assert done.returncode == 2 and done.stdout == "", done.stdout
        assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    done = subprocess.run([str(BIN / "mnist-eval"), str(run_dir), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and json.loads(done.stdout)["accuracy"] > 0.9, done.stderr
