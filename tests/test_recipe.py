"""The training recipe's parts: augmentation, label smoothing, early stopping, sweeps."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import snapshot
from mnist_gluon.augment import (
    Shift,
    ShiftCopies,
    Warp,
    copy_rows,
    pad_images,
    shift_draws,
    shifted_copies,
    uses_copies,
)
from mnist_gluon.cli import run, sweep_command, train_command
from mnist_gluon.config import AugmentConfig, load_config
from mnist_gluon.data import DATASETS, Normalization, normalise, read_split, split_validation
from mnist_gluon.errors import Stopped
from mnist_gluon.model import Architecture, build_model
from mnist_gluon.mxnet_compat import mx
from mnist_gluon.train import TrainStep, run_training

BIN = Path(sys.executable).parent


def test_shift_moves_each_image_by_whole_pixels_filling_with_the_background():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((6, 784)).astype(np.float32)
    cfg = AugmentConfig(shift=2)
    order = np.array([4, 0, 5, 1, 3, 2])
    rows, offsets = shift_draws(order, cfg, seed=1, epoch=3)
    block = Shift(2)
    block.initialize()
    moved = block(mx.nd.array(pad_images(images, 2, -9.0)), mx.nd.array(rows, dtype="int32"),
                  mx.nd.array(offsets, dtype="int32")).asnumpy().reshape(6, 28, 28)
    padded = np.full((6, 32, 32), -9.0, np.float32)
    padded[:, 2:30, 2:30] = images.reshape(6, 28, 28)
    for i, example in enumerate(order):
        top = rows[i, 0] - example * 32
        np.testing.assert_array_equal(moved[i], padded[example, top : top + 28,
                                                       offsets[i] : offsets[i] + 28])
    assert len({(r[0] % 32, o) for r, o in zip(rows, offsets, strict=True)}) > 1


def test_flip_mirrors_left_right_and_warp_mirrors_the_same_way():
    images = np.random.default_rng(3).standard_normal((1, 784)).astype(np.float32)
    flipped = images.reshape(28, 28)[:, ::-1]
    block = Shift(0)
    block.initialize()
    rows = mx.nd.array(np.arange(28)[None, :], dtype="int32")
    out = block(mx.nd.array(pad_images(images, 0, 0.0)), rows,
                mx.nd.array([1], dtype="int32")).asnumpy().reshape(28, 28)
    np.testing.assert_array_equal(out, flipped)
    warped = Warp(background=0.0)(mx.nd.array(images), mx.nd.array([[0, 1, 0, 0, -1]]))
    np.testing.assert_allclose(warped.asnumpy().reshape(28, 28), flipped, atol=1e-4)
    draws = shift_draws(np.arange(1000), AugmentConfig(flip=True), 0, 1)[1]
    assert 400 < (draws == 1).sum() < 600 and set(draws.tolist()) == {0, 1}


@pytest.mark.parametrize("cfg", [AugmentConfig(shift=2), AugmentConfig(shift=1, flip=True)])
def test_the_fast_copies_path_moves_pixels_exactly_as_the_selector_path(cfg):
    images = np.random.default_rng(4).standard_normal((7, 784)).astype(np.float32)
    padded = pad_images(images, cfg.shift, -0.5)
    rows, selectors = shift_draws(np.array([3, 1, 6, 0, 5, 2, 4]), cfg, 3, 1)
    by_selectors = Shift(cfg.shift)
    by_selectors.initialize()
    expected = by_selectors(mx.nd.array(padded), mx.nd.array(rows, dtype="int32"),
                            mx.nd.array(selectors, dtype="int32")).asnumpy()
    got = ShiftCopies()(mx.nd.array(shifted_copies(padded, cfg)),
                        mx.nd.array(copy_rows(rows, selectors, 7, cfg), dtype="int32"))
    np.testing.assert_array_equal(got.asnumpy(), expected)
    assert uses_copies(cfg) and not uses_copies(AugmentConfig(shift=4))


def test_shift_draws_are_a_function_of_seed_and_epoch():
    order = np.arange(100)
    same = shift_draws(order, AugmentConfig(shift=2), 5, 2), shift_draws(
        order, AugmentConfig(shift=2), 5, 2)
    np.testing.assert_array_equal(same[0][1], same[1][1])
    other = shift_draws(order, AugmentConfig(shift=2), 5, 3)
    assert not np.array_equal(same[0][1], other[1])


def test_warp_without_change_is_the_identity_and_a_rotation_moves_pixels():
    images = mx.nd.array(np.random.default_rng(1).standard_normal((3, 784)).astype(np.float32))
    warp = Warp(background=-0.4)
    still = mx.nd.array(np.tile([0.0, 1.0, 0.0, 0.0, 1.0], (3, 1)).astype(np.float32))
    np.testing.assert_allclose(warp(images, still).asnumpy(), images.asnumpy(), atol=1e-4)
    turned = mx.nd.array(np.tile([math.radians(10), 1.0, 0.0, 0.0, 1.0], (3, 1)).astype(
        np.float32))
    assert not np.allclose(warp(images, turned).asnumpy(), images.asnumpy(), atol=1e-2)


def test_label_smoothing_spreads_the_target_over_all_classes():
    net = build_model(Architecture(hidden=8), mx.cpu())
    images = mx.nd.array(np.random.default_rng(2).standard_normal((4, 784)).astype(np.float32))
    labels = mx.nd.array([3, 1, 0, 9])
    logits = net(images).asnumpy().astype(np.float64)
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    expected = sum(-(0.9 * log_p[i, int(y)] + 0.1 * log_p[i].mean())
                   for i, y in enumerate(labels.asnumpy()))
    step = TrainStep(net, label_smoothing=0.1)
    loss, _ = step(images, labels, mx.nd.array([0, 1, 2, 3], dtype="int32")).asnumpy()
    assert loss == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("shift", [2, 4], ids=["copies", "selectors"])
def test_an_augmented_run_stopped_midway_resumes_to_identical_parameters(small_config,
                                                                        tmp_path, shift):
    settings = [f"data.augment.shift={shift}", "train.label_smoothing=0.1"]
    reference = tmp_path / "reference"
    run_training(load_config(small_config, settings), reference, quiet=True)
    stopped = tmp_path / "stopped"
    calls = [0]

    def stop_signal():
        calls[0] += 1
        return 15 if calls[0] >= 37 else None

    with pytest.raises(Stopped):
        run_training(load_config(small_config, settings), stopped, quiet=True,
                     stop_signal=stop_signal)
    assert run(train_command, ["--resume", str(stopped), "--quiet"]) == 0
    for name, value in mx.nd.load(str(reference / "last.params")).items():
        np.testing.assert_array_equal(value.asnumpy(),
                                      mx.nd.load(str(stopped / "last.params"))[name].asnumpy())


def test_validation_sees_the_images_as_they_are(small_config, small_mnist, tmp_path):
    out = tmp_path / "run"
    run_training(load_config(small_config, ["data.augment.shift=3", "train.epochs=1"]), out,
                 quiet=True)
    meta = json.loads((out / "best.json").read_text())
    split = read_split(DATASETS["mnist"], "train", small_mnist, download=False, verify=False)
    _, _, val_images, val_labels = split_validation(split.images, split.labels, 500, 7)
    net = build_model(Architecture(hidden=32), mx.cpu(), initialize=False)
    net.load_parameters(str(out / "best.params"))
    norm = Normalization(**meta["normalization"])
    logits = net(mx.nd.array(normalise(val_images, norm))).asnumpy()
    assert meta["best_val_accuracy"] == float(np.mean(logits.argmax(axis=1) == val_labels))


def test_early_stopping_ends_the_run_keeping_the_best_checkpoint(small_config, tmp_path,
                                                                 capsys):
    out = tmp_path / "run"
    code = run(train_command, ["--config", str(small_config), "--out", str(out), "--quiet",
                               "--set", "train.epochs=8", "--set", "train.lr=1e-9",
                               "--set", "train.early_stopping={patience: 2, min_delta: 0.01}"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert ("early stopping: validation accuracy has not risen by more than 0.01 for 2 "
            "epochs; the best is epoch 1") in stdout
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3
    assert json.loads((out / "best.json").read_text())["epoch"] == 1
    kept = snapshot(out)
    assert run(train_command, ["--resume", str(out), "--quiet"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert snapshot(out, exclude={"config.yaml", "curves.png", "metrics.jsonl"}) == {
        k: v for k, v in kept.items() if k not in ("config.yaml", "curves.png", "metrics.jsonl")}


# --- mnist-sweep -------------------------------------------------------------------------------

def sweep(tmp_path, small_config, *extra) -> list[str]:
    return ["--config", str(small_config), "--out", str(tmp_path / "sweep"),
            "--grid", "train.lr=0.0003,0.003", "--set", "train.epochs=1", *extra]


def test_a_sweep_runs_every_trial_and_picks_the_best_on_validation(small_config, tmp_path,
                                                                    capsys):
    assert run(sweep_command, sweep(tmp_path, small_config, "--jobs", "2")) == 0
    out = tmp_path / "sweep"
    rows = json.loads((out / "results.json").read_text())
    assert [r["trial"] for r in rows] == ["trial-000", "trial-001"]
    assert [r["train.lr"] for r in rows] == [0.0003, 0.003]
    best = max(rows, key=lambda r: r["best_val_accuracy"])
    for row in rows:
        meta = json.loads((out / row["trial"] / "best.json").read_text())
        assert row["best_val_accuracy"] == meta["best_val_accuracy"]
    assert yaml.safe_load((out / "best.yaml").read_text())["train"]["lr"] == best["train.lr"]
    assert (out / "results.csv").read_text().splitlines()[0] == (
        "trial,train.lr,best_val_accuracy,best_epoch,epochs_run,finished")
    assert f"# best: {best['trial']}" in capsys.readouterr().out


def test_a_sweep_run_again_skips_finished_trials_and_resumes_interrupted_ones(small_config,
                                                                           tmp_path, capsys):
    assert run(sweep_command, sweep(tmp_path, small_config)) == 0
    out = tmp_path / "sweep"
    first = snapshot(out / "trial-000")
    # trial-001 as a Ctrl-C would leave it: stopped inside its epoch, checkpointed.
    for path in (out / "trial-001").iterdir():
        path.unlink()
    (out / "trial-001").rmdir()
    with pytest.raises(Stopped):
        run_training(load_config(small_config, ["train.epochs=1", "train.lr=0.003"]),
                     out / "trial-001", quiet=True, stop_signal=iter([None] * 20 + [2]).__next__)
    capsys.readouterr()
    assert run(sweep_command, sweep(tmp_path, small_config)) == 0
    err = capsys.readouterr().err
    assert "trial-000: finished earlier, skipped" in err and "trial-001: started" in err
    assert "resuming at epoch 1, step 22 of 50" in (out / "trial-001.log").read_text()
    assert snapshot(out / "trial-000") == first


@pytest.mark.parametrize("args, message", [
    (["--grid", "train.lr"], "is not KEY=V1,V2"),
    (["--grid", "train.lr=-1,0.1"], r"train.lr is -1"),
    (["--grid", "train.lrate=0.1"], "did you mean train.lr"),
])
def test_bad_sweeps_are_one_line_exit_2_before_any_trial_runs(small_config, tmp_path, capsys,
                                                              args, message):
    code = run(sweep_command, ["--config", str(small_config), "--out", str(tmp_path / "s"),
                               *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "s").exists()


def test_a_folder_holding_another_sweep_is_refused(small_config, tmp_path, capsys):
    assert run(sweep_command, sweep(tmp_path, small_config)) == 0
    before = snapshot(tmp_path / "sweep")
    args = sweep(tmp_path, small_config)
    args[args.index("train.lr=0.0003,0.003")] = "train.lr=0.01"
    assert run(sweep_command, args) == 2
    assert "holds another sweep" in capsys.readouterr().err
    assert snapshot(tmp_path / "sweep") == before


def test_mnist_sweep_is_installed():
    result = subprocess.run([str(BIN / "mnist-sweep"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--grid" in result.stdout
