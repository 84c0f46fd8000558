import json

import numpy as np
import pytest

from mnist_gluon.checkpoint import read_checkpoint
from mnist_gluon.config import TrainConfig, load_config
from mnist_gluon.errors import ConfigError
from mnist_gluon.evaluate import evaluate_checkpoint
from mnist_gluon.mxnet_compat import mx
from mnist_gluon.train import learning_rate, run_training


def params_of(path):
    return {name: array for name, array in read_checkpoint(path).arrays.items()}


def assert_same_params(a, b):
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# --- learning-rate schedules --------------------------------------------------------------

def test_cosine_starts_at_the_base_rate_and_decays_to_zero():
    cfg = TrainConfig(epochs=10, lr=0.1, lr_schedule="cosine")
    assert learning_rate(0, 100, cfg) == pytest.approx(0.1)
    assert learning_rate(500, 100, cfg) == pytest.approx(0.05)
    assert learning_rate(999, 100, cfg) < 1e-5


def test_warmup_rises_linearly_then_the_schedule_takes_over():
    cfg = TrainConfig(epochs=10, lr=0.1, lr_schedule="cosine", warmup_epochs=1)
    assert learning_rate(0, 100, cfg) == pytest.approx(0.001)
    assert learning_rate(49, 100, cfg) == pytest.approx(0.05)
    assert learning_rate(100, 100, cfg) == pytest.approx(0.1)
    assert learning_rate(550, 100, cfg) == pytest.approx(0.05)


def test_step_schedule_decays_at_the_given_epochs_or_at_half_and_three_quarters():
    cfg = TrainConfig(epochs=10, lr=1.0, lr_schedule="step", lr_decay=0.1, lr_step_epochs=[3])
    assert [learning_rate(e * 10, 10, cfg) for e in (0, 2, 3, 9)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1])
    cfg = TrainConfig(epochs=8, lr=1.0, lr_schedule="step", lr_decay=0.5)
    assert [learning_rate(e * 10, 10, cfg) for e in (3, 4, 6)] == pytest.approx([1, 0.5, 0.25])


def test_no_schedule_keeps_the_rate():
    cfg = TrainConfig(epochs=3, lr=0.2, lr_schedule="none")
    assert {learning_rate(s, 10, cfg) for s in range(30)} == {0.2}


# --- real runs on a small slice of real MNIST --------------------------------------------

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
    evaluation = evaluate_checkpoint(run / "best.params")
    assert evaluation.report.accuracy > 0.8


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
    assert summary.epochs[-1].epoch == 1
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
