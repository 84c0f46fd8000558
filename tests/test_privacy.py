"""train.privacy: DP-SGD. Each example's gradient is clipped before the batch's sum, noise is
added, batches are Poisson-sampled from a secret key, the privacy spent is dp-accounting's own
figure, and every way of using it wrongly is one line before anything is written."""

import json
import shutil

import numpy as np
import pytest

from mnist_gluon.checkpoint import EpochProgress, read_checkpoint
from mnist_gluon.cli import eval_command, run, train_command
from mnist_gluon.config import TrainConfig, load_config
from mnist_gluon.errors import Stopped
from mnist_gluon.model import Architecture, build_model, named_parameters
from mnist_gluon.mxnet_compat import autograd, mx
from mnist_gluon.privacy.accounting import Mechanism
from mnist_gluon.privacy.clipping import PrivateStep, clipped_sum, per_example_gradients
from mnist_gluon.privacy.sampling import poisson_batch
from mnist_gluon.training.augment import NoAugmentation
from mnist_gluon.training.loop import DeviceSums, GraphStep
from mnist_gluon.training.optim import Updater
from mnist_gluon.training.run import may_be_best, run_training
from mnist_gluon.training.step import DeviceData, train_step_graph
from support import stop_at

PRIVATE = ["train.privacy.noise_multiplier=1.0", "train.privacy.delta=1e-4",
           "train.privacy.clip=1.0", "train.lr=0.1", "train.optimizer=sgd"]
MLP = Architecture(hidden=16)
SMALL_LENET = Architecture(kind="lenet", channels=[3, 5], hidden=8)


def example_batch(count=6, seed=0):
    rng = np.random.default_rng(seed)
    images = mx.nd.array(rng.normal(size=(count, 784)).astype(np.float32))
    labels = mx.nd.array(rng.integers(0, 10, count).astype(np.float32))
    return images, labels


def one_by_one(net, images, labels) -> list[dict[str, np.ndarray]]:
    """Each example's gradient, from its own backward pass through the Gluon network."""
    params = named_parameters(net)
    grads = []
    for i in range(images.shape[0]):
        with autograd.record():
            logits = net(images[i:i + 1])
            loss = -mx.nd.pick(mx.nd.log_softmax(logits, axis=1), labels[i:i + 1], axis=1).sum()
        loss.backward()
        grads.append({name: p.grad().asnumpy().copy() for name, p in params.items()})
    return grads


@pytest.mark.parametrize("copies", [1, 3])
@pytest.mark.parametrize("arch", [MLP, SMALL_LENET], ids=["mlp", "lenet"])
def test_per_example_norms_and_the_clipped_sum_match_a_loop_over_single_examples(arch, copies):
    mx.random.seed(3)
    net = build_model(arch, mx.cpu())
    images, labels = example_batch(count=6 * copies)
    labels = mx.nd.array(np.repeat(labels.asnumpy()[::copies], copies))  # copies share a label
    rows = one_by_one(net, images, labels)
    # An example's gradient: the mean of its copies' (augmentation multiplicity).
    loop = [{name: np.mean([g[name] for g in rows[i:i + copies]], axis=0) for name in rows[0]}
            for i in range(0, len(rows), copies)]
    norms = [np.sqrt(sum((g ** 2).sum() for g in grads.values())) for grads in loop]
    layers, _ = per_example_gradients(net, images, labels, copies=copies)
    together = np.sqrt(sum(layer.squared_norms().asnumpy() for layer in layers))
    np.testing.assert_allclose(together, norms, rtol=1e-4)

    clip = float(np.median(norms))  # clips some examples and not others
    sums, stats = clipped_sum(net, images, labels, clip, copies=copies)
    for name in loop[0]:
        expected = sum(min(1.0, clip / norm) * grads[name]
                       for norm, grads in zip(norms, loop, strict=True))
        np.testing.assert_allclose(sums[name].asnumpy(), expected, rtol=1e-4, atol=1e-6)
    assert stats.asnumpy()[0] > 0


def private_step(net, updater, clip, noise):
    return PrivateStep(net, NoAugmentation().gather(), updater,
                       Mechanism(noise, 0.01, clip, 1e-5, "pld"))


def train_steps(step, images, labels, batches, lr, batch_size):
    data = [DeviceData(tuple(mx.nd.array(a) for a in NoAugmentation().device_arrays(images,
                                                                                   labels)))]
    plan = [[(mx.nd.array(batch, dtype="int32"),)] for batch in batches]
    sums = DeviceSums([mx.cpu()], EpochProgress(1))
    for i in range(len(plan)):
        step(data, plan, i, 1, lambda _: lr, batch_size, i, sums)


def weights(net) -> np.ndarray:
    return np.concatenate([p.data().asnumpy().ravel() for p in named_parameters(net).values()])


def test_one_example_scaled_1000_times_moves_the_update_by_at_most_clip_times_lr():
    images, labels = (a.asnumpy() for a in example_batch(count=8))
    moved = images.copy()
    moved[3] *= 1000
    after = []
    for batch_images in (images, moved):
        mx.random.seed(5)
        net = build_model(MLP, mx.cpu())
        updater = Updater(named_parameters(net), TrainConfig(optimizer="sgd", momentum=0.0),
                          mx.cpu())
        start = weights(net)
        train_steps(private_step(net, updater, clip=0.5, noise=0.0), batch_images, labels,
                    [np.arange(8)], lr=0.1, batch_size=8)
        after.append(weights(net) - start)
    assert np.linalg.norm(after[0]) > 0
    change = np.linalg.norm(after[1] - after[0])
    # Its clipped gradient left the sum and another came in: 2 x clip, over the batch of 8.
    assert change <= 2 * 0.5 * 0.1 / 8 * (1 + 1e-5) <= 0.5 * 0.1


@pytest.mark.parametrize("arch", [MLP, SMALL_LENET], ids=["mlp", "lenet"])
def test_without_noise_and_with_a_clip_nothing_reaches_private_training_is_plain_training(arch):
    images, labels = (a.asnumpy() for a in example_batch(count=40, seed=2))
    batches = [np.arange(0, 8), np.arange(8, 16), np.arange(16, 24)]
    trained = []
    for private in (True, False):
        mx.random.seed(5)
        net = build_model(arch, mx.cpu())
        updater = Updater(named_parameters(net), TrainConfig(optimizer="nag"), mx.cpu())
        step = (private_step(net, updater, clip=1e6, noise=0.0) if private else
                GraphStep(train_step_graph(net, NoAugmentation()), updater))
        start = weights(net)
        train_steps(step, images, labels, batches, lr=0.05, batch_size=8)
        trained.append(weights(net) - start)
    assert np.abs(trained[0]).max() > 1e-3
    np.testing.assert_allclose(trained[0], trained[1], rtol=1e-3, atol=1e-6)


def private_run(small_config, run_dir, *overrides):
    return run_training(load_config(small_config, [*PRIVATE, *overrides]), run_dir, quiet=True)


def test_the_sidecar_records_what_dp_accounting_itself_counts_for_the_steps_taken(small_config,
                                                                                   tmp_path):
    import dp_accounting
    from dp_accounting import pld, rdp

    for accountant in ("pld", "rdp"):
        run_dir = tmp_path / accountant
        private_run(small_config, run_dir, "train.privacy.noise_multiplier=null",
                    "train.privacy.target_epsilon=3", f"train.privacy.accountant={accountant}")
        record = json.loads((run_dir / "last.json").read_text())["privacy"]
        assert set(record) == {"epsilon", "delta", "noise_multiplier", "sample_rate", "steps",
                               "clip", "accountant"}
        assert record["steps"] == 2 * 50 and record["sample_rate"] == 50 / 2500
        counter = pld.PLDAccountant() if accountant == "pld" else rdp.RdpAccountant()
        counter.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
            record["sample_rate"], dp_accounting.GaussianDpEvent(record["noise_multiplier"])),
            record["steps"]))
        assert record["epsilon"] == pytest.approx(counter.get_epsilon(1e-4), rel=1e-9)
        # The noise was chosen to spend the target, and no more.
        assert 2.9 < record["epsilon"] <= 3.0


def test_batches_are_poisson_sampled_from_a_secret_key_not_the_seed():
    sizes = [len(poisson_batch(np.array([1, 2, 3, 4]), step, 10_000, 0.05)) for step in range(200)]
    assert len(set(sizes)) > 10 and abs(np.mean(sizes) - 500) < 10
    # Two runs with one seed draw other batches: the key is drawn afresh for each.
    from mnist_gluon.privacy.sampling import new_key

    assert not np.array_equal(poisson_batch(new_key(), 0, 10_000, 0.05),
                              poisson_batch(new_key(), 0, 10_000, 0.05))


def test_only_the_last_epoch_is_the_private_runs_model_and_eval_shows_its_epsilon(
        small_config, tmp_path, capsys):
    config = load_config(small_config, [*PRIVATE, "train.epochs=3"])
    # An earlier epoch's choice would look at later epochs, whose privacy it does not count.
    assert [may_be_best(config, epoch) for epoch in (1, 2, 3)] == [False, False, True]
    trained = private_run(small_config, tmp_path / "run", "train.epochs=3")
    best = read_checkpoint(tmp_path / "run" / "best.params").sidecar
    assert trained.best_epoch == 3 and best.epoch == 3 and best.privacy.steps == 150
    assert run(eval_command, ["--checkpoint", str(tmp_path / "run" / "best.params")]) == 0
    out = capsys.readouterr().out
    assert f"epsilon {best.privacy.epsilon:.3f} at delta 0.0001" in out


def test_each_example_may_come_as_augmented_copies_whose_mean_gradient_is_clipped(
        small_config, tmp_path):
    trained = private_run(small_config, tmp_path / "run", "data.augment.shift=1",
                          "train.privacy.augmentations=3")
    last = trained.history[-1]
    # Accuracy is counted per example, not per copy: three copies right are one example right.
    assert 0.4 < last.train_accuracy <= 1 and np.isfinite(last.train_loss)
    assert last.val_accuracy > 0.5


def test_a_resumed_private_run_draws_what_the_uninterrupted_run_drew_and_counts_each_step_once(
        small_config, tmp_path):
    whole = tmp_path / "whole"
    private_run(small_config, whole, "checkpoint.keep=2")
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    for name in ("previous", "epoch-0002", "best"):
        for suffix in (".params", ".states", ".json"):
            (cut / f"{name}{suffix}").unlink(missing_ok=True)
    (cut / "last.params").write_bytes(b"cut short")  # resumes from epoch-0001
    assert run(train_command, ["--resume", str(cut), "--quiet"]) == 0
    assert (cut / "last.params").read_bytes() == (whole / "last.params").read_bytes()
    assert json.loads((cut / "last.json").read_text())["privacy"] == json.loads(
        (whole / "last.json").read_text())["privacy"]

    stopped = tmp_path / "stopped"
    with pytest.raises(Stopped):
        run_training(load_config(small_config, PRIVATE), stopped, quiet=True,
                     stop_signal=stop_at(30))
    assert run(train_command, ["--resume", str(stopped), "--quiet"]) == 0
    record = json.loads((stopped / "last.json").read_text())["privacy"]
    assert record["steps"] == 100 and record["epsilon"] == json.loads(
        (whole / "last.json").read_text())["privacy"]["epsilon"]


@pytest.mark.parametrize("optimizer", ["sgd", "nag", "adam", "rmsprop"])
def test_every_optimizer_takes_the_noisy_clipped_gradient_the_fused_update_included(optimizer):
    images, labels = (a.asnumpy() for a in example_batch(count=24, seed=4))
    trained, kernels = [], []
    for compiled in (True, False):
        mx.random.seed(5)
        net = build_model(MLP, mx.cpu())
        updater = Updater(named_parameters(net), TrainConfig(optimizer=optimizer), mx.cpu(),
                          compiled=compiled)
        updater.secrets["privacy"] = np.array([7, 7, 7, 7])
        start = weights(net)
        train_steps(private_step(net, updater, clip=1.0, noise=1.0), images, labels,
                    [np.arange(0, 12), np.arange(12, 24)], lr=0.01, batch_size=12)
        trained.append(weights(net) - start)
        kernels.append(updater.kernel)
    assert kernels == (["compiled", "mxnet"] if optimizer != "rmsprop" else ["mxnet", "mxnet"])
    assert np.linalg.norm(trained[0]) > 0
    np.testing.assert_allclose(trained[0], trained[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("overrides,message", [
    (["train.privacy.noise_multiplier=0"],
     "train.privacy.noise_multiplier is 0.0; it must be null, or in [0.3, 100]: with less, "
     "epsilon is past 100"),
    (["train.privacy.noise_multiplier=0.01"],
     "train.privacy.noise_multiplier is 0.01; it must be null, or in [0.3, 100]: with less, "
     "epsilon is past 100"),
    (["train.privacy.delta=null"],
     "train.privacy.delta is not set; private training needs it: 1e-5 for MNIST (below 1 / the "
     "training examples)"),
    (["train.privacy.delta=0.001"],
     "train.privacy.delta is 0.001, not below 1 / the 2500 training examples (0.0004): a "
     "guarantee that weak allows one example in the release; use 1e-5 or less"),
    (["train.privacy.clip=0"], "train.privacy.clip is 0.0; it must be a number above 0"),
    (["train.privacy.clip=-1"], "train.privacy.clip is -1.0; it must be a number above 0"),
    (["train.privacy.noise_multiplier=null", "train.privacy.target_epsilon=0.0001"],
     "train.privacy.target_epsilon=0.0001 cannot be met in 100 steps at train.batch_size=50 "
     "(2500 examples): even noise_multiplier 100 spends"),
    (["train.privacy.target_epsilon=1"],
     "train.privacy sets both noise_multiplier and target_epsilon; set one (the other follows "
     "from it)"),
    (["train.distill.teacher=runs/lenet/best.params"],
     "train.distill.teacher cannot be used with train.privacy (a teacher trained without "
     "privacy on the same images); remove one of them"),
    (["train.privacy.augmentations=2"],
     "train.privacy.augmentations=2 needs data.augment: without it the copies are the same "
     "image; set data.augment.shift=1, or augmentations back to 1"),
    (["train.early_stopping.patience=2"],
     "train.early_stopping.patience cannot be used with train.privacy (its best epoch is chosen "
     "after later epochs spent privacy too); remove one of them"),
])
def test_each_misuse_is_one_line_exit_2_and_no_folder(small_config, tmp_path, capsys,
                                                      overrides, message):
    out = tmp_path / "run"
    args = ["--config", str(small_config), "--out", str(out), "--quiet"]
    for override in [*PRIVATE, *overrides]:
        args += ["--set", override]
    assert run(train_command, args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mnist-train: error: {message}") and err.count("\n") == 1
    assert not out.exists()


def test_resuming_with_other_privacy_is_refused(small_config, tmp_path, capsys):
    private_run(small_config, tmp_path / "run", "train.epochs=1")
    code = run(train_command, ["--resume", str(tmp_path / "run"), "--quiet", "--set",
                               "train.privacy.noise_multiplier=2", "--set", "train.epochs=2"])
    assert code == 2
    assert "was trained with noise_multiplier 1, sample rate 0.02, clip 1, delta 0.0001; its " \
           "privacy was counted for that" in capsys.readouterr().err
