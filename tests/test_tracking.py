"""TensorBoard event files, read back with TensorBoard's own reader."""

import shutil

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from mnist_gluon.checkpoint import read_checkpoint
from mnist_gluon.cli import run, train_command
from mnist_gluon.config import load_config
from mnist_gluon.training.run import run_training
from support import check_install_hint, without_module

EVERY = 10  # track.every_steps in these runs; small_config has 50 steps an epoch


def shown(run_dir):
    """What TensorBoard shows for the run in `run_dir`, all of it."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={
        "scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def steps(accumulator, tag):
    return [event.step for event in accumulator.Scalars(tag)]


def test_a_run_shows_its_curves_histograms_confusion_matrix_and_hparams(small_config, tmp_path):
    run_dir = tmp_path / "run"
    run_training(load_config(small_config, [f"track.every_steps={EVERY}"]), run_dir, quiet=True)
    seen = shown(run_dir)
    assert steps(seen, "step/train_loss") == list(range(EVERY, 101, EVERY))
    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                 "samples_per_second"):
        assert steps(seen, f"epoch/{name}") == [50, 100]
    accuracies = [round(e.value, 6) for e in seen.Scalars("epoch/val_accuracy")]
    best = read_checkpoint(run_dir / "best.params").sidecar.best_val_accuracy
    assert max(accuracies) == round(best, 6)
    assert sorted(seen.Tags()["histograms"]) == ["weights/fc1.bias", "weights/fc1.weight",
                                                  "weights/fc2.bias", "weights/fc2.weight"]
    (image,) = seen.Images("validation/confusion_matrix")
    assert (image.width, image.height) == (160, 160)  # 10 x 10 classes, 16 pixels each
    hparams = plugin_data_pb2.HParamsPluginData.FromString(
        seen.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    settings = hparams.session_start_info.hparams
    assert settings["train.lr"].number_value == pytest.approx(0.003)
    assert settings["model.hidden"].number_value == 32
    assert [e.value for e in seen.Scalars("hparam/best_val_accuracy")] == [
        pytest.approx(best)]


def test_a_resumed_run_appends_to_its_logs_without_a_step_twice(small_config, tmp_path):
    settings = [f"track.every_steps={EVERY}", "checkpoint.keep=2"]
    run_dir = tmp_path / "run"
    run_training(load_config(small_config, settings), run_dir, quiet=True)
    # A crash that lost epoch 2's checkpoint after its logs were written: `last` is epoch 1.
    for suffix in (".params", ".states", ".json"):
        shutil.copy(run_dir / f"epoch-0001{suffix}", run_dir / f"last{suffix}")
        (run_dir / f"epoch-0002{suffix}").unlink()
    assert run(train_command, ["--resume", str(run_dir), "--quiet"]) == 0
    seen = shown(run_dir)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2
    assert steps(seen, "epoch/val_accuracy") == [50, 100]
    logged = steps(seen, "step/train_loss")
    assert logged == sorted(set(logged)) == list(range(EVERY, 101, EVERY))


def test_tracking_can_be_turned_off(small_config, tmp_path):
    run_training(load_config(small_config, ["track.tensorboard=false"]), tmp_path / "run",
                 quiet=True)
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_without_the_extra_a_run_trains_without_a_word_of_tensorboard(small_config, tmp_path):
    result = without_module("tensorboardX", tmp_path, "train_command", [
        "--config", small_config, "--out", tmp_path / "run", "--quiet"])
    assert result.returncode == 0, result.stderr
    assert "TensorBoard" not in result.stdout + result.stderr
    assert (tmp_path / "run" / "best.params").exists()
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_a_run_that_asks_for_tensorboard_without_the_extra_says_how_to_install_it(
        small_config, tmp_path):
    result = without_module("tensorboardX", tmp_path, "train_command", [
        "--config", small_config, "--out", tmp_path / "run", "--quiet", "--set",
        "track.tensorboard=true"])
    assert result.returncode == 0, result.stderr
    assert "no TensorBoard logs: track.tensorboard=true needs tensorboardX: " in result.stdout
    check_install_hint(result.stdout)
    assert (tmp_path / "run" / "best.params").exists()
