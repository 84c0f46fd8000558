"""Pictures: training curves, the confusion matrix, the worst mistakes, and without matplotlib."""

import shutil
import struct
from pathlib import Path

from mnist_gluon.cli import eval_command, run
from support import without_module


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_eval_plot_writes_the_confusion_matrix_and_the_worst_mistakes(model, mnist_dir,
                                                                      tmp_path):
    assert run(eval_command, ["--checkpoint", str(model), "--data-root", str(mnist_dir),
                              "--plot", str(tmp_path / "plots"), "--json"]) == 0
    assert png_size(tmp_path / "plots/confusion.png") == (700, 600)
    assert png_size(tmp_path / "plots/mistakes.png") == (800, 880)


def test_training_ends_with_curves_png(model):
    assert png_size(model.parent / "curves.png") == (1000, 400)


def test_without_matplotlib_the_commands_say_how_to_install_it(model, mnist_dir, tmp_path):
    shutil.copy(model, tmp_path / "m.params")
    shutil.copy(model.with_suffix(".json"), tmp_path / "m.json")
    result = without_module("matplotlib", tmp_path, "eval_command", [
        "--checkpoint", tmp_path / "m.params", "--data-root", mnist_dir, "--plot",
        tmp_path / "plots"])
    assert result.returncode == 0, result.stderr
    assert "accuracy 0.9" in result.stdout
    assert "pip install 'mnist-gluon[plot]'" in result.stderr
    assert not (tmp_path / "plots").exists()
