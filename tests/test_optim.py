"""The optimizer update: MXNet's own arithmetic, without gluon.Trainer's per-step overhead."""

import numpy as np
import pytest

from mnist_gluon.config import TrainConfig
from mnist_gluon.errors import CheckpointError
from mnist_gluon.model import Architecture, build_model, named_parameters
from mnist_gluon.mxnet_compat import autograd, gluon, mx
from mnist_gluon.training.optim import Updater, learning_rate

ARCH = Architecture(hidden=16)
BATCH = 32


def batches(count: int):
    rng = np.random.default_rng(0)
    for _ in range(count):
        yield (mx.nd.array(rng.standard_normal((BATCH, 784)).astype(np.float32)),
               mx.nd.array(rng.integers(0, 10, BATCH).astype(np.float32)))


def backward(net, images, labels):
    with autograd.record():
        loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(images), labels)
    loss.backward()


def fresh_net(ctxs=None):
    mx.random.seed(7)
    return build_model(ARCH, ctxs or mx.cpu())


def weights(net) -> dict:
    return {name: p.data().asnumpy() for name, p in named_parameters(net).items()}


def trainer_options(cfg: TrainConfig) -> dict:
    options = {"learning_rate": cfg.lr, "wd": cfg.weight_decay}
    if cfg.optimizer in ("sgd", "nag"):
        options["momentum"] = cfg.momentum
    if cfg.clip_gradient is not None:
        options["clip_gradient"] = cfg.clip_gradient
    return options


@pytest.mark.parametrize("cfg", [
    TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4),
    TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0),
    TrainConfig(optimizer="nag", lr=0.1, momentum=0.9, weight_decay=1e-4),
    TrainConfig(optimizer="adam", lr=0.01, weight_decay=1e-4),
    TrainConfig(optimizer="rmsprop", lr=0.01),
    TrainConfig(optimizer="adam", lr=0.01, clip_gradient=0.001),
], ids=["sgd-momentum", "sgd", "nag", "adam", "rmsprop", "adam-clipped"])
def test_each_optimizer_trains_exactly_as_gluon_trainer_does(cfg):
    ours, theirs = fresh_net(), fresh_net()
    updater = Updater(named_parameters(ours), cfg, mx.cpu())
    trainer = gluon.Trainer(theirs.collect_params(), cfg.optimizer, trainer_options(cfg),
                            kvstore=None)
    for images, labels in batches(5):
        backward(ours, images, labels)
        updater.step(cfg.lr, BATCH)
        backward(theirs, images, labels)
        trainer.step(BATCH)
    for name, value in weights(ours).items():
        np.testing.assert_allclose(value, weights(theirs)[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    assert any(not np.allclose(v, w) for v, w in zip(weights(ours).values(),
                                                    weights(fresh_net()).values(), strict=True))


@pytest.mark.parametrize("reduce_ctx", [mx.cpu(0), mx.cpu(1)], ids=["first-device", "elsewhere"])
def test_two_devices_each_with_half_the_batch_match_one_device(reduce_ctx):
    cfg = TrainConfig(optimizer="nag", lr=0.1, momentum=0.9, weight_decay=5e-4)
    one, two = fresh_net(), fresh_net([mx.cpu(0), mx.cpu(1)])
    one_updater = Updater(named_parameters(one), cfg, mx.cpu(0))
    two_updater = Updater(named_parameters(two), cfg, reduce_ctx)
    for images, labels in batches(4):
        backward(one, images, labels)
        one_updater.step(cfg.lr, BATCH)
        with autograd.record():
            losses = [gluon.loss.SoftmaxCrossEntropyLoss()(two(x.as_in_context(c)),
                                                           y.as_in_context(c))
                      for x, y, c in ((images[:16], labels[:16], mx.cpu(0)),
                                      (images[16:], labels[16:], mx.cpu(1)))]
        autograd.backward(losses)
        two_updater.step(cfg.lr, BATCH)
    for name, param in named_parameters(two).items():
        first, second = (d.asnumpy() for d in param.list_data())
        np.testing.assert_array_equal(first, second)  # every device holds the same weights
        np.testing.assert_allclose(first, weights(one)[name], rtol=1e-5, atol=1e-6)


def test_saved_state_continues_the_same_trajectory(tmp_path):
    cfg = TrainConfig(optimizer="adam", lr=0.01)
    straight, resumed = fresh_net(), fresh_net()
    straight_updater = Updater(named_parameters(straight), cfg, mx.cpu())
    data = list(batches(6))
    for images, labels in data:
        backward(straight, images, labels)
        straight_updater.step(cfg.lr, BATCH)

    first_updater = Updater(named_parameters(resumed), cfg, mx.cpu())
    for images, labels in data[:3]:
        backward(resumed, images, labels)
        first_updater.step(cfg.lr, BATCH)
    first_updater.save(tmp_path / "x.states")
    second_updater = Updater(named_parameters(resumed), cfg, mx.cpu())
    second_updater.load(tmp_path / "x.states")
    for images, labels in data[3:]:
        backward(resumed, images, labels)
        second_updater.step(cfg.lr, BATCH)
    for name, value in weights(straight).items():
        np.testing.assert_array_equal(value, weights(resumed)[name])


def test_state_of_another_optimizer_is_refused(tmp_path):
    net = fresh_net()
    Updater(named_parameters(net), TrainConfig(optimizer="adam"), mx.cpu()).save(tmp_path / "s")
    nag = Updater(named_parameters(net), TrainConfig(optimizer="nag"), mx.cpu())
    with pytest.raises(CheckpointError, match="another optimizer"):
        nag.load(tmp_path / "s")


def test_a_damaged_state_file_is_refused(tmp_path):
    (tmp_path / "s").write_bytes(b"not an ndarray file")
    updater = Updater(named_parameters(fresh_net()), TrainConfig(optimizer="adam"), mx.cpu())
    with pytest.raises(CheckpointError, match="not an optimizer state file"):
        updater.load(tmp_path / "s")


# --- the learning-rate schedule ---------------------------------------------------------

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
