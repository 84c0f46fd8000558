"""Augmentation: each strategy moves pixels exactly, draws from (seed, epoch), and resumes
exactly."""

import math

import numpy as np
import pytest

from mnist_gluon.config import AugmentConfig, ElasticConfig, load_config
from mnist_gluon.data import Normalization
from mnist_gluon.mxnet_compat import mx
from mnist_gluon.training.augment import (
    NoAugmentation,
    Shift,
    ShiftCopies,
    Warp,
    augmentation,
    copy_rows,
    pad_images,
    shift_draws,
    shifted_copies,
    uses_copies,
)
from mnist_gluon.training.run import run_training
from support import stopped_then_resumed


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


@pytest.mark.parametrize("augment", [
    ["data.augment.shift=2"], ["data.augment.shift=4"],
    ["data.augment.elastic.alpha=20", "data.augment.rotate=5"],
    ["data.augment.elastic.alpha=20", "data.augment.rotate=5", "kernels=mxnet"]],
    ids=["copies", "selectors", "elastic", "mxnet-elastic"])
def test_an_augmented_run_stopped_midway_resumes_to_identical_parameters(small_config,
                                                                        tmp_path, augment):
    settings = [*augment, "train.label_smoothing=0.1"]
    reference = tmp_path / "reference"
    run_training(load_config(small_config, settings), reference, quiet=True)
    stopped = stopped_then_resumed(small_config, settings, tmp_path / "stopped", 37)
    for name, value in mx.nd.load(str(reference / "last.params")).items():
        np.testing.assert_array_equal(value.asnumpy(),
                                      mx.nd.load(str(stopped / "last.params"))[name].asnumpy())


def elastic_batch(cfg: AugmentConfig, seed: int, kernel: str, epoch: int = 0,
                  rows: slice = slice(None)) -> np.ndarray:
    """Eight real-looking images through the elastic gather block of `kernel`, with the
    step's inputs its strategy makes for (seed, epoch), `rows` of them. MXNet's generator is
    seeded as the training loop does before a step; the compiled warp does not use it."""
    images = np.random.default_rng(3).standard_normal((8, 784)).astype(np.float32)
    labels = np.arange(8)
    strategy = augmentation(cfg, Normalization(0.1307, 0.3081), kernel)
    block = strategy.gather()
    block.initialize()
    held = [mx.nd.array(a, dtype=a.dtype) for a in strategy.device_arrays(images, labels)]
    own = [mx.nd.array(c[rows], dtype=c.dtype)
           for c in strategy.step_columns(labels, labels, seed, epoch)]
    mx.random.seed(seed)
    batch, batch_labels = block(*held, *own)
    assert batch_labels.asnumpy().tolist() == labels[rows].tolist()
    return batch.asnumpy()


@pytest.mark.parametrize("kernel", ["compiled", "mxnet"])
def test_elastic_fields_are_drawn_from_the_seed_and_move_pixels(kernel):
    cfg = AugmentConfig(elastic=ElasticConfig(alpha=34, sigma=4))
    first, again, other = (elastic_batch(cfg, seed, kernel) for seed in (5, 5, 6))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other, atol=1e-3)
    images = np.random.default_rng(3).standard_normal((8, 784)).astype(np.float32)
    assert not np.allclose(first, images, atol=1e-2)


def test_compiled_elastic_draws_depend_on_seed_epoch_and_image_not_on_the_batch_split():
    cfg = AugmentConfig(shift=1, elastic=ElasticConfig(alpha=20, sigma=4))
    whole = elastic_batch(cfg, 42, "compiled")
    halves = [elastic_batch(cfg, 42, "compiled", rows=part)
              for part in (slice(0, 4), slice(4, 8))]
    np.testing.assert_array_equal(np.concatenate(halves), whole)  # two devices, four each
    assert not np.allclose(elastic_batch(cfg, 42, "compiled", epoch=1), whole, atol=1e-3)


@pytest.mark.parametrize("kernel", ["compiled", "mxnet"])
def test_elastic_without_displacement_is_the_identity_and_alpha_0_is_off(kernel):
    assert type(augmentation(AugmentConfig(elastic=ElasticConfig(alpha=0)),
                             Normalization(0, 1), kernel)) is NoAugmentation
    still = AugmentConfig(elastic=ElasticConfig(alpha=1e-9, sigma=4))
    images = np.random.default_rng(3).standard_normal((8, 784)).astype(np.float32)
    np.testing.assert_allclose(elastic_batch(still, 1, kernel), images, atol=1e-4)


def test_compiled_elastic_applies_the_shift_draws_moving_whole_pixels_in_the_background():
    shifted = AugmentConfig(shift=2, elastic=ElasticConfig(alpha=1e-9, sigma=4))
    strategy = augmentation(shifted, Normalization(0.1307, 0.3081), "compiled")
    background = strategy.background
    images = np.random.default_rng(3).standard_normal((8, 784)).astype(np.float32)
    angle, scale, dy, dx, mirror = strategy.step_columns(np.arange(8), np.arange(8), 7, 0)[1].T
    assert (angle == 0).all() and (scale == 1).all() and (mirror == 1).all()
    moved = elastic_batch(shifted, 7, "compiled").reshape(8, 28, 28)
    for image, out, down, right in zip(images.reshape(8, 28, 28), moved, dy, dx, strict=True):
        expected = np.full((28 + 8, 28 + 8), background, dtype=np.float32)
        expected[4 + int(down):32 + int(down), 4 + int(right):32 + int(right)] = image
        np.testing.assert_allclose(out, expected[4:32, 4:32], atol=1e-4)
