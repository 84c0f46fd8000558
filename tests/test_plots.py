"""Pictures: training curves, the confusion matrix, the worst mistakes, and without matplotlib."""

import shutil
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_gluon.cli import eval_command, run
from mnist_gluon.training.curves import SERIES
from support import check_install_hint, without_module


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


def pixels_of(path: Path, colour: tuple[int, int, int]) -> int:
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(image - colour).sum(axis=2) < 30).sum())


def test_the_curves_draw_training_and_validation_and_a_refit_only_training(model, tmp_path):
    (training, _, blue), (validation, _, orange) = SERIES
    curves = model.parent / "curves.png"
    assert pixels_of(curves, blue) > 500 and pixels_of(curves, orange) > 500
    from mnist_gluon.cli import train_command

    assert run(train_command, ["--refit", str(model.parent), "--out", str(tmp_path / "refit"),
                               "--quiet"]) == 0
    refit = tmp_path / "refit" / "curves.png"
    assert pixels_of(refit, blue) > 500 and pixels_of(refit, orange) == 0


def test_without_matplotlib_a_run_still_draws_its_curves(small_config, tmp_path):
    result = without_module("matplotlib", tmp_path, "train_command", [
        "--config", small_config, "--out", tmp_path / "run", "--quiet"])
    assert result.returncode == 0, result.stderr
    assert "curves.png" not in result.stdout + result.stderr  # no "not written" note
    assert png_size(tmp_path / "run" / "curves.png") == (1000, 400)


def test_without_matplotlib_the_commands_say_how_to_install_it(model, mnist_dir, tmp_path):
    shutil.copy(model, tmp_path / "m.params")
    shutil.copy(model.with_suffix(".json"), tmp_path / "m.json")
    result = without_module("matplotlib", tmp_path, "eval_command", [
        "--checkpoint", tmp_path / "m.params", "--data-root", mnist_dir, "--plot",
        tmp_path / "plots"])
    assert result.returncode == 0, result.stderr
    assert "accuracy 0.9" in result.stdout
    assert "pictures need matplotlib: " in result.stderr
    check_install_hint(result.stderr)
    assert not (tmp_path / "plots").exists()
