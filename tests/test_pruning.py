"""train.prune: the smallest weights are set to zero on a schedule and stay zero through every
update, the weight average and a resume; the sidecar says how sparse each layer is."""

import json

import numpy as np
import pytest

from mnist_gluon.checkpoint import read_checkpoint
from mnist_gluon.cli import export_command, run, train_command
from mnist_gluon.compression.prune import magnitude_masks, sparsity_at
from mnist_gluon.config import PruneConfig, load_config
from mnist_gluon.errors import ConfigError
from mnist_gluon.files import sha256_of
from mnist_gluon.mxnet_compat import mx
from mnist_gluon.training.run import run_training
from support import LENET, stopped_then_resumed

PRUNE = ["train.prune.sparsity=0.8", "train.prune.epochs=2", "train.epochs=3"]


def arrays(path) -> dict[str, np.ndarray]:
    return {name: a.asnumpy() for name, a in mx.nd.load(str(path)).items()}


def masks_in(states) -> dict[str, np.ndarray]:
    return {name.removeprefix("mask:"): a for name, a in arrays(states).items()
            if name.startswith("mask:")}


def test_gradual_sparsity_rises_as_a_cube_to_its_target_and_one_shot_starts_there():
    gradual = PruneConfig(sparsity=0.9, schedule="gradual", epochs=4)
    assert [round(sparsity_at(e, gradual), 4) for e in range(1, 7)] == [
        round(0.9 * (1 - (1 - e / 4) ** 3), 4) for e in (1, 2, 3, 4, 4, 4)]
    assert sparsity_at(4, gradual) == 0.9
    assert [sparsity_at(e, PruneConfig(sparsity=0.9, schedule="one_shot")) for e in (1, 5)] == [
        0.9, 0.9]
    assert sparsity_at(3, PruneConfig()) == 0.0


def test_masks_zero_the_smallest_weights_across_layers_or_within_each():
    small = np.array([[0.1, -0.2], [0.3, -0.4]], np.float32)
    large = np.array([1.0, -2.0, 3.0, 0.05], np.float32)
    together = magnitude_masks({"a": small, "b": large}, 0.5, "global")
    assert together["a"].tolist() == [[0, 0], [0, 1]] and together["b"].tolist() == [1, 1, 1, 0]
    apart = magnitude_masks({"a": small, "b": large}, 0.5, "layer")
    assert apart["a"].tolist() == [[0, 0], [1, 1]] and apart["b"].tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("optimizer,kernels", [
    ("nag", "compiled"), ("sgd", "compiled"), ("adam", "compiled"),
    ("nag", "mxnet"), ("adam", "mxnet"), ("rmsprop", "mxnet")])
def test_pruned_weights_stay_zero_through_every_optimizer_and_the_average(
        small_config, tmp_path, optimizer, kernels):
    run_dir = tmp_path / "run"
    run_training(load_config(small_config, [*PRUNE, f"train.optimizer={optimizer}",
                                            f"kernels={kernels}", "train.average.start_epoch=1"]),
                 run_dir, quiet=True)
    weights, masks = arrays(run_dir / "last.params"), masks_in(run_dir / "last.states")
    average = arrays(run_dir / "last.average")
    assert sorted(masks) == ["fc1.weight", "fc2.weight"]
    total = sum(mask.size for mask in masks.values())
    assert sum((mask == 0).sum() for mask in masks.values()) == round(0.8 * total)
    for name, mask in masks.items():
        assert (weights[name][mask == 0] == 0).all(), name
        assert (weights[name][mask == 1] != 0).all(), name  # the kept ones still train
        assert (average[name][mask == 0] == 0).all(), name  # epoch 1 was less sparse
    sidecar = json.loads((run_dir / "last.json").read_text())
    assert sidecar["sparsity"] == {name: round(float((m == 0).mean()), 6)
                                   for name, m in masks.items()}
    assert sidecar["kernels"]["update"] == kernels
    assert "mlp_step" not in sidecar["kernels"]  # the compiled step keeps no mask


def test_the_best_checkpoint_is_one_at_the_full_sparsity(small_config, tmp_path):
    dense = tmp_path / "dense"
    run_training(load_config(small_config), dense, quiet=True)
    run_dir = tmp_path / "run"
    # From trained weights, the first, less sparse epoch validates best of all: it may not be
    # chosen, since it is not the model asked for.
    run_training(load_config(small_config, [*PRUNE, "train.prune.sparsity=0.97",
                                            "train.lr=0.0003", f"train.prune.start_from={dense}"]),
                 run_dir, quiet=True)
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs[0]["val_accuracy"] > max(e["val_accuracy"] for e in epochs[1:])
    best = json.loads((run_dir / "best.json").read_text())
    assert best["best_epoch"] >= 2
    assert best["best_val_accuracy"] == max(e["val_accuracy"] for e in epochs[1:])
    weights = arrays(run_dir / "best.params")["fc1.weight"]
    assert (weights == 0).mean() >= 0.96


def test_a_stopped_pruned_run_resumes_to_the_same_bits(small_config, tmp_path):
    overrides = [*PRUNE, "train.average.start_epoch=2", "train.optimizer=nag"]
    whole = tmp_path / "whole"
    run_training(load_config(small_config, overrides), whole, quiet=True)
    steps = 50  # 2,500 training images in batches of 50: a stop inside epoch 2, and one ...
    for stop in (steps + 17, 2 * steps):  # ... at the end of epoch 2, before epoch 3's pruning
        resumed = stopped_then_resumed(small_config, overrides, tmp_path / f"at{stop}", stop)
        for name in ("last.params", "last.states", "last.average"):
            assert sha256_of(resumed / name) == sha256_of(whole / name), (stop, name)


def test_a_lenet_prunes_its_convolutions_too(small_config, tmp_path):
    run_dir = tmp_path / "run"
    run_training(load_config(small_config, [*LENET, *PRUNE, "train.prune.scope=layer"]),
                 run_dir, quiet=True)
    masks = masks_in(run_dir / "last.states")
    assert sorted(masks) == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]
    weights = arrays(run_dir / "last.params")
    for name, mask in masks.items():
        assert abs((mask == 0).mean() - 0.8) < 0.01, name  # each layer to the sparsity
        assert (weights[name][mask == 0] == 0).all(), name


def test_a_run_starts_from_a_checkpoint_and_records_it(small_config, tmp_path):
    dense = tmp_path / "dense"
    run_training(load_config(small_config), dense, quiet=True)
    pruned = tmp_path / "pruned"
    run_training(load_config(small_config, [
        "train.prune.sparsity=0.5", "train.prune.schedule=one_shot", "train.epochs=1",
        "train.lr=0.0001", f"train.prune.start_from={dense}"]), pruned, quiet=True)
    sidecar = read_checkpoint(pruned / "last.params").sidecar
    assert sidecar.started_from.sha256 == sha256_of(dense / "best.params")
    start, after = arrays(dense / "best.params"), arrays(pruned / "last.params")
    kept = after["fc1.weight"] != 0
    # A small learning rate: the kept weights are the start's largest, moved a little.
    assert np.abs(after["fc1.weight"][kept] - start["fc1.weight"][kept]).max() < 0.01
    assert np.abs(start["fc1.weight"][kept]).min() >= np.abs(start["fc1.weight"][~kept]).max()


@pytest.mark.parametrize("setting,says", [
    (["train.prune.sparsity=1"], "train.prune.sparsity is 1.0; it must be null, or in [0, 1)"),
    (["train.prune.scope=layers"], "did you mean layer?"),
    (["train.prune.start_from=nowhere.params"], "train.prune.sparsity"),
    (["train.prune.sparsity=0.5", "train.kvstore=dist_sync"], "train.prune"),
])
def test_bad_prune_settings_are_one_line(small_config, setting, says):
    with pytest.raises(ConfigError, match="train") as refused:
        load_config(small_config, setting)
    assert says in str(refused.value)


def test_a_start_that_is_not_this_runs_is_refused_in_one_line(small_config, tmp_path, capsys):
    dense = tmp_path / "dense"
    run_training(load_config(small_config, ["train.epochs=1"]), dense, quiet=True)
    mnc = tmp_path / "model.mnc"
    assert run(export_command, [str(dense), "--format", "compressed", "--out", str(tmp_path)]) == 0
    for start, other, says in (
            (dense, "seed=8", "seed 7, val_size 500; this run has mnist, seed 8"),
            (dense, "model.hidden=16", "holds MLP 784 -> 32 relu -> 10, this run trains MLP "
                                       "784 -> 16 relu -> 10"),
            (mnc, "seed=7", "is a compressed model"),
            (tmp_path / "missing.params", "seed=7", "does not exist")):
        out = tmp_path / "pruned"
        capsys.readouterr()
        code = run(train_command, ["--config", str(small_config), "--out", str(out), "--set",
                                   other, "--set", "train.prune.sparsity=0.5", "--set",
                                   f"train.prune.start_from={start}", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


SHARE = [*PRUNE, "train.epochs=4", "train.prune.shared_values=48", "train.prune.share_epochs=2"]


def test_shared_weights_train_as_their_centroids_and_export_without_loss(small_config, tmp_path):
    from mnist_gluon.compression.mnc import encode, read_compressed

    run_dir = tmp_path / "run"
    run_training(load_config(small_config, [*SHARE, "train.average.start_epoch=3"]), run_dir,
                 quiet=True)
    for name in ("last.params", "last.average", "best.params"):
        weights = arrays(run_dir / name)
        for layer in ("fc1.weight", "fc2.weight"):
            assert len(np.unique(weights[layer][weights[layer] != 0])) <= 48, (name, layer)
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert json.loads((run_dir / "best.json").read_text())["best_epoch"] >= 3
    assert epochs[3]["val_loss"] != epochs[2]["val_loss"]  # the shared values trained on
    path = tmp_path / "model.mnc"
    path.write_bytes(encode(read_checkpoint(run_dir / "best.params")))  # 48, as trained
    decoded, kept = read_compressed(path).arrays, arrays(run_dir / "best.params")
    for name, values in kept.items():
        np.testing.assert_array_equal(decoded[name], values, err_msg=name)


def test_a_run_stopped_while_sharing_resumes_to_the_same_bits(small_config, tmp_path):
    overrides = [*SHARE, "train.average.start_epoch=3", "train.optimizer=nag"]
    whole = tmp_path / "whole"
    run_training(load_config(small_config, overrides), whole, quiet=True)
    resumed = stopped_then_resumed(small_config, overrides, tmp_path / "stopped", 50 * 3 + 20)
    for name in ("last.params", "last.states", "last.average"):
        assert sha256_of(resumed / name) == sha256_of(whole / name), name


def test_a_run_on_two_devices_prunes_and_shares_as_on_one(small_config, tmp_path):
    run_dir = tmp_path / "run"
    run_training(load_config(small_config, [*SHARE, "device=cpu:0,1"]), run_dir, quiet=True)
    weights, masks = arrays(run_dir / "last.params"), masks_in(run_dir / "last.states")
    for name, mask in masks.items():
        assert (weights[name][mask == 0] == 0).all(), name
        assert len(np.unique(weights[name][mask == 1])) <= 48, name
