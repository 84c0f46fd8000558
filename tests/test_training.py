"""Training runs: real short runs on real MNIST, the step's loss, validation, early stopping,
devices, optimizers and divergence."""

import json
import re

import numpy as np
import pytest

from mnist_gluon.checkpoint import read_checkpoint
from mnist_gluon.cli import run, train_command
from mnist_gluon.config import load_config
from mnist_gluon.data import DATASETS, Normalization, normalise, read_split, split_validation
from mnist_gluon.errors import ConfigError
from mnist_gluon.inference.evaluate import evaluate
from mnist_gluon.model import Architecture, build_model
from mnist_gluon.mxnet_compat import mx
from mnist_gluon.training.augment import (
    NoAugmentation,
)
from mnist_gluon.training.run import run_training
from mnist_gluon.training.step import TrainStep
from support import snapshot


def params_of(path):
    return {name: array for name, array in read_checkpoint(path).arrays.items()}


def assert_same_params(a, b):
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_short_real_run_learns_and_writes_its_run_folder(small_config, tmp_path):
    config = load_config(small_config)
    summary = run_training(config, tmp_path / "run", quiet=True)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "last.params", "last.json", "last.states",
                 "best.params", "best.json", "best.states", "epoch-0002.params"):
        assert (run / name).exists(), name
    assert not (run / "epoch-0001.params").exists()  # checkpoint.keep: 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["val_accuracy"] > 0.8  # ten classes: chance is 0.1
    assert summary.best_val_accuracy == max(r["val_accuracy"] for r in rows)
    assert load_config(run / "config.yaml") == config
    sidecar = json.loads((run / "best.json").read_text())
    assert sidecar["architecture"]["hidden"] == 32
    assert {"config", "epoch", "metrics", "data", "versions", "normalization"} <= set(sidecar)
    assert sidecar["versions"]["mxnet"] == mx.__version__
    report = evaluate(run / "best.params")
    assert report.accuracy > 0.8


def test_best_checkpoint_is_the_epoch_with_the_best_validation_accuracy(small_config, tmp_path):
    config = load_config(small_config, ["train.epochs=4", "train.lr=0.05", "train.optimizer=sgd",
                                        "train.lr_schedule=none"])
    summary = run_training(config, tmp_path / "run", quiet=True)
    rows = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: r["val_accuracy"])
    assert summary.best_epoch == best["epoch"]
    assert json.loads((tmp_path / "run/best.json").read_text())["epoch"] == best["epoch"]


def test_the_same_seed_gives_bit_identical_parameters(small_config, tmp_path):
    config = load_config(small_config)
    run_training(config, tmp_path / "a", quiet=True)
    run_training(config, tmp_path / "b", quiet=True)
    assert_same_params(params_of(tmp_path / "a/last.params"), params_of(tmp_path / "b/last.params"))


def test_another_seed_gives_other_parameters(small_config, tmp_path):
    run_training(load_config(small_config), tmp_path / "a", quiet=True)
    run_training(load_config(small_config, ["seed=8"]), tmp_path / "b", quiet=True)
    a, b = params_of(tmp_path / "a/last.params"), params_of(tmp_path / "b/last.params")
    assert not np.array_equal(a["fc1.weight"], b["fc1.weight"])


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resuming_a_stopped_run_ends_where_the_uninterrupted_run_ends(small_config, tmp_path,
                                                                      dropout):
    # A constant rate, so a run of 1 epoch is the first epoch of a run of 3.
    common = ["train.lr_schedule=none", f"model.dropout={dropout}"]
    three = load_config(small_config, ["train.epochs=3", *common])
    run_training(three, tmp_path / "whole", quiet=True)
    one = load_config(small_config, ["train.epochs=1", *common])
    run_training(one, tmp_path / "parts", quiet=True)
    run_training(three, tmp_path / "parts", resume=True, quiet=True)
    assert_same_params(params_of(tmp_path / "whole/last.params"),
                       params_of(tmp_path / "parts/last.params"))
    rows = (tmp_path / "parts/metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]
    assert load_config(tmp_path / "parts/config.yaml") == three


def test_resuming_a_finished_run_trains_no_further(small_config, tmp_path):
    config = load_config(small_config, ["train.epochs=1"])
    run_training(config, tmp_path / "run", quiet=True)
    before = (tmp_path / "run/last.params").read_bytes()
    summary = run_training(config, tmp_path / "run", resume=True, quiet=True)
    assert summary.history[-1].epoch == 1
    assert (tmp_path / "run/last.params").read_bytes() == before


def test_two_cpu_contexts_train_like_one_with_the_same_total_batch(small_config, tmp_path):
    run_training(load_config(small_config, ["train.epochs=1"]), tmp_path / "one", quiet=True)
    run_training(load_config(small_config, ["train.epochs=1", "device=cpu:0,1"]),
                 tmp_path / "two", quiet=True)
    one, two = params_of(tmp_path / "one/last.params"), params_of(tmp_path / "two/last.params")
    for name in one:
        np.testing.assert_allclose(one[name], two[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_kvstore_device_aggregates_like_local(small_config, tmp_path):
    common = ["train.epochs=1", "device=cpu:0,1"]
    run_training(load_config(small_config, common), tmp_path / "local", quiet=True)
    run_training(load_config(small_config, [*common, "train.kvstore=device"]),
                 tmp_path / "device", quiet=True)
    local, device = params_of(tmp_path / "local/last.params"), params_of(
        tmp_path / "device/last.params")
    for name in local:
        np.testing.assert_allclose(local[name], device[name], rtol=1e-4, atol=1e-5)


def test_without_a_validation_set_the_latest_epoch_is_the_best(small_config, tmp_path):
    summary = run_training(load_config(small_config, ["data.val_size=0"]), tmp_path / "run",
                           quiet=True)
    assert summary.best_epoch == 2 and summary.best_val_accuracy is None
    assert (tmp_path / "run/best.params").read_bytes() == (
        tmp_path / "run/last.params").read_bytes()
    row = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[-1])
    assert row["val_accuracy"] is None


def test_a_batch_that_does_not_split_over_the_devices_is_a_config_error(small_config, tmp_path):
    config = load_config(small_config, ["device=cpu:0,1", "train.batch_size=51"])
    with pytest.raises(ConfigError, match="does not split evenly over 2 devices"):
        run_training(config, tmp_path / "run", quiet=True)


def test_a_batch_larger_than_the_training_set_is_a_config_error(small_config, tmp_path):
    config = load_config(small_config, ["train.batch_size=5000"])
    with pytest.raises(ConfigError, match="larger than the 2500 training examples"):
        run_training(config, tmp_path / "run", quiet=True)


@pytest.mark.parametrize("optimizer", ["sgd", "nag", "adam", "rmsprop"])
def test_every_optimizer_learns(small_config, tmp_path, optimizer):
    lr = {"sgd": 0.1, "nag": 0.1, "adam": 0.003, "rmsprop": 0.001}[optimizer]
    config = load_config(small_config, [f"train.optimizer={optimizer}", f"train.lr={lr}",
                                        "train.epochs=1", "train.weight_decay=0.0001",
                                        "train.clip_gradient=1.0"])
    summary = run_training(config, tmp_path / "run", quiet=True)
    assert summary.best_val_accuracy > 0.7


def test_label_smoothing_spreads_the_target_over_all_classes():
    net = build_model(Architecture(hidden=8), mx.cpu())
    images = mx.nd.array(np.random.default_rng(2).standard_normal((4, 784)).astype(np.float32))
    labels = mx.nd.array([3, 1, 0, 9])
    logits = net(images).asnumpy().astype(np.float64)
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    expected = sum(-(0.9 * log_p[i, int(y)] + 0.1 * log_p[i].mean())
                   for i, y in enumerate(labels.asnumpy()))
    step = TrainStep(net, NoAugmentation().gather(), label_smoothing=0.1)
    loss, _ = step(images, labels, mx.nd.array([0, 1, 2, 3], dtype="int32")).asnumpy()
    assert loss == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("augment", ["data.augment.shift=3", "data.augment.elastic.alpha=34"])
def test_validation_sees_the_images_as_they_are(small_config, small_mnist, tmp_path, augment):
    out = tmp_path / "run"
    run_training(load_config(small_config, [augment, "train.epochs=1"]), out, quiet=True)
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


def test_divergence_stops_with_exit_1_naming_the_step_and_the_intact_checkpoint(small_config,
                                                                               tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_training(load_config(small_config, ["train.epochs=1"]), run_dir, quiet=True)
    kept = snapshot(run_dir, exclude={"config.yaml"})
    code = run(train_command, ["--resume", str(run_dir), "--set", "train.epochs=2",
                               "--set", "train.lr=1e38", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == (
        f"mnist-train: error: the loss became non-finite at step 52 (epoch 2); "
        f"the last good checkpoint is {run_dir / 'last.params'} (end of epoch 1); lower "
        "train.lr or set train.clip_gradient, or set train.skip_nonfinite=true")
    assert snapshot(run_dir, exclude={"config.yaml"}) == kept


def test_an_epoch_that_skips_most_of_its_batches_ends_the_run_as_diverged(small_config,
                                                                         tmp_path, capsys):
    # Adam at lr 1e17: the weights stay finite but nearly every loss overflows, so nearly
    # every batch is skipped; the run used to finish "done" on weights it barely trained.
    run_dir = tmp_path / "run"
    code = run(train_command, ["--config", str(small_config), "--out", str(run_dir),
                               "--set", "train.lr=1e17", "--set", "train.skip_nonfinite=true",
                               "--set", "train.epochs=1", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert re.search(r"more than half the batches had a non-finite loss in epoch 1 \((\d+) of "
                     r"50 batches were skipped", err), err
    assert "set train.skip_nonfinite=true" not in err  # it is set already


def test_weights_that_blow_up_despite_skip_nonfinite_end_the_run_as_diverged(small_config,
                                                                          tmp_path, capsys):
    # SGD at lr 1e30: the first update is finite but makes every logit overflow; every later
    # batch is then skipped, and the run used to finish "done" with val_loss nan and exit 0.
    run_dir = tmp_path / "run"
    args = ["--config", str(small_config), "--out", str(run_dir), "--set", "train.lr=1e30",
            "--set", "train.optimizer=sgd", "--set", "train.skip_nonfinite=true", "--quiet"]
    assert run(train_command, args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeWarning" not in err
    assert "the weights blew up in epoch 1 (" in err and "the validation loss is not finite" in err
    # A run that never reached a checkpoint leaves nothing behind: the same command, fixed,
    # is not refused as "already holds a run".
    assert not run_dir.exists()
    assert run(train_command, [*args[:4], "--set", "train.epochs=1", "--quiet"]) == 0


def test_a_refit_trains_on_all_the_data_for_the_epochs_validation_chose(small_config,
                                                                         tmp_path, capsys):
    chosen = tmp_path / "chosen"
    run_training(load_config(small_config, ["train.epochs=4", "train.lr=0.03"]), chosen,
                 quiet=True)
    best_epoch = read_checkpoint(chosen / "best.params").sidecar.best_epoch
    capsys.readouterr()
    assert run(train_command, ["--refit", str(chosen), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3000 train / 0 validation examples" in out
    assert f"for the {best_epoch} epochs that validation chose in {chosen}" in out
    sidecar = read_checkpoint(tmp_path / "chosen-refit" / "last.params").sidecar
    assert sidecar.refit_of == str(chosen.resolve()) and sidecar.best_val_accuracy is None
    assert (sidecar.epoch, sidecar.config.train.epochs, sidecar.config.data.val_size) == (
        best_epoch, best_epoch, 0)
    # A refit has no validation figure, so it cannot choose the epochs of another refit.
    assert run(train_command, ["--refit", str(tmp_path / "chosen-refit")]) == 2
    assert "was trained without a validation set" in capsys.readouterr().err
