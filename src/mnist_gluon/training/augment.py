"""Random shifts, rotations and scaling of training images, inside the training graph.

The random draws are made on the host for a whole epoch at once, from a generator seeded with
(seed, epoch), and handed to the graph step by step: the changes are reproducible, a run
resumed at any step draws what the uninterrupted run drew, and no step pays for Python per
image.

Each kind of augmentation is one strategy object (`augmentation` picks it): the arrays it holds
on the device, each step's own inputs, and the block that gathers a step's batch from them.

Whole-pixel shifts (and left-right flips) are exact. The training set is held padded with the
background on every side, one array row per image row. When it fits (`uses_copies`), it is
held once per horizontal placement, so a step gathers the 28 rows of each image's window and
is done. Otherwise a step gathers rows of the padded set and moves them sideways with a
batched product by 0/1 matrices. A per-pixel gather was slower than either on MXNet's CPU
kernels. Rotation and scaling (with the shift) go through
MXNet's affine `GridGenerator` and `BilinearSampler`, which cost more. Elastic distortion (with
the affine draws) is the compiled `mnist_elastic_warp` (mnist_gluon.kernels), one pass per
image; `kernels: mxnet` and GPU contexts use MXNet's generator and sampler instead.
"""

from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..config import AugmentConfig
from ..data import IMAGE_SIZE, PIXELS, Normalization, normalise
from ..mxnet_compat import gluon


def padded_size(shift: int) -> int:
    return IMAGE_SIZE + 2 * shift


def pad_images(images: np.ndarray, shift: int, background: float) -> np.ndarray:
    """Normalised N x 784 images -> (N * S) x S rows of padded images, S = 28 + 2*shift, the
    border the background: one row of the array per row of an image."""
    size = padded_size(shift)
    out = np.full((len(images), size, size), background, dtype=np.float32)
    out[:, shift : shift + IMAGE_SIZE, shift : shift + IMAGE_SIZE] = images.reshape(
        -1, IMAGE_SIZE, IMAGE_SIZE)
    return out.reshape(len(images) * size, size)


COPIES_BUDGET = 1.5 * 2**30  # bytes of shifted copies worth holding for the fast path
REFERENCE_EXAMPLES = 60_000  # the budget is judged for a full MNIST-sized training set


def variants(cfg: AugmentConfig) -> int:
    """How many horizontal placements (offsets, each also mirrored with flip) there are."""
    return (2 * cfg.shift + 1) * (2 if cfg.flip else 1)


def uses_copies(cfg: AugmentConfig) -> bool:
    """Whether to hold every horizontal placement as a copy of the training set, so a step
    needs one row gather (fast), rather than a gather and a product by selectors (less
    memory): copies when they fit in COPIES_BUDGET, as for shift <= 2 without flip."""
    size = variants(cfg) * REFERENCE_EXAMPLES * padded_size(cfg.shift) * IMAGE_SIZE * 4
    return size <= COPIES_BUDGET


def shifted_copies(padded_rows: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """(N * S) x S padded rows -> (V * N * S) x 28: for each selector of `column_selectors`,
    every padded row cut (and mirrored) to the 28 columns it picks."""
    offsets = 2 * cfg.shift + 1
    copies = [padded_rows[:, v % offsets : v % offsets + IMAGE_SIZE]
              for v in range(variants(cfg))]
    copies = [c[:, ::-1] if v >= offsets else c for v, c in enumerate(copies)]
    return np.ascontiguousarray(np.concatenate(copies), dtype=np.float32)


def copy_rows(rows: np.ndarray, selectors: np.ndarray, num_examples: int,
              cfg: AugmentConfig) -> np.ndarray:
    """Row indices into `shifted_copies` for the draws of `shift_draws`."""
    block = num_examples * padded_size(cfg.shift)
    return (selectors.astype(np.int64)[:, None] * block + rows).astype(np.int32)


def column_selectors(shift: int) -> np.ndarray:
    """For each horizontal offset 0..2*shift, then each again mirrored, the S x 28 0/1 matrix
    that picks the 28 columns of the window: multiplying by it moves pixels exactly."""
    size = padded_size(shift)
    offsets = 2 * shift + 1
    table = np.zeros((2 * offsets, size, IMAGE_SIZE), dtype=np.float32)
    columns = np.arange(IMAGE_SIZE)
    for offset in range(offsets):
        table[offset, columns + offset, columns] = 1.0
        table[offsets + offset, columns + offset, columns[::-1]] = 1.0
    return table


def shift_draws(order: np.ndarray, cfg: AugmentConfig, seed: int, epoch: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """For each example of the epoch's order: the padded rows its window covers (28 of them,
    moved up or down) and its column selector (horizontal offset, and whether mirrored)."""
    size = padded_size(cfg.shift)
    rng = np.random.default_rng([seed, epoch, 1])
    dy, dx = rng.integers(0, 2 * cfg.shift + 1, size=(2, len(order)))
    if cfg.flip:
        dx = dx + (2 * cfg.shift + 1) * rng.integers(0, 2, size=len(order))
    rows = (order.astype(np.int64) * size + dy)[:, None] + np.arange(IMAGE_SIZE)[None, :]
    return rows.astype(np.int32), dx.astype(np.int32)


def affine_draws(count: int, cfg: AugmentConfig, seed: int, epoch: int) -> np.ndarray:
    """count x 5: angle (radians), scale, whole-pixel shift down and right, and -1 to mirror
    left-right (else 1)."""
    rng = np.random.default_rng([seed, epoch, 2])
    angle = rng.uniform(-1, 1, count) * math.radians(cfg.rotate)
    scale = 1 + rng.uniform(-1, 1, count) * cfg.scale
    dy, dx = rng.integers(-cfg.shift, cfg.shift + 1, size=(2, count))
    mirror = 1 - 2 * rng.integers(0, 2, size=count) if cfg.flip else np.ones(count)
    return np.stack([angle, scale, dy, dx, mirror], axis=1).astype(np.float32)


class ShiftCopies(gluon.HybridBlock):
    """(shifted copies, (B, 28) row indices) -> (B, 784): one gather of whole rows."""

    def hybrid_forward(self, F, copies, rows):
        return F.reshape(F.take(copies, rows), shape=(-1, PIXELS))


class Shift(gluon.HybridBlock):
    """(padded rows, (B, 28) row indices, (B,) offsets) -> (B, 784) shifted images: a gather of
    whole rows moves each image up or down; a product with a 0/1 matrix moves it sideways."""

    def __init__(self, shift: int, **kwargs):
        super().__init__(**kwargs)
        self.selectors = self.params.get_constant("selectors", column_selectors(shift))

    def hybrid_forward(self, F, rows_data, rows, offsets, selectors):
        window_rows = F.take(rows_data, rows)  # (B, 28, S)
        return F.reshape(F.batch_dot(window_rows, F.take(selectors, offsets)),
                         shape=(-1, PIXELS))


class Warp(gluon.HybridBlock):
    """(B, 784) normalised images and (B, 5) draws -> rotated, scaled, shifted, mirrored."""

    def __init__(self, background: float, **kwargs):
        super().__init__(**kwargs)
        self.background = background

    def hybrid_forward(self, F, images, draws):
        angle, scale, dy, dx, mirror = F.split(draws, num_outputs=5, axis=1)
        step = 2.0 / (IMAGE_SIZE - 1)  # the sampler's [-1, 1] spans the 28 pixel centres
        cos, sin = F.cos(angle) / scale, F.sin(angle) / scale
        # The grid maps output pixels to input ones: the inverse of the change.
        theta = F.concat(cos * mirror, -sin, -dx * step, sin * mirror, cos, -dy * step, dim=1)
        grid = F.GridGenerator(theta, transform_type="affine",
                               target_shape=(IMAGE_SIZE, IMAGE_SIZE))
        square = F.reshape(images - self.background, shape=(-1, 1, IMAGE_SIZE, IMAGE_SIZE))
        moved = F.BilinearSampler(square, grid)  # zero outside, i.e. the background
        return F.reshape(moved, shape=(-1, PIXELS)) + self.background


# --- the strategies -------------------------------------------------------------------------

class NoAugmentation:
    """Batches as they are. Every strategy says what the device holds for the whole run
    (`device_arrays`), each example's inputs in the epoch's order (`step_columns`, cut into
    steps by the caller) and the block that gathers a step's (batch, labels) from both."""

    def device_arrays(self, normalised: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
        return normalised, labels.astype(np.float32)

    def step_columns(self, order: np.ndarray, labels: np.ndarray, seed: int,
                     epoch: int) -> list[np.ndarray]:
        return [order.astype(np.int32)]

    def gather(self) -> gluon.HybridBlock:
        return Take()


class Warped(NoAugmentation):
    """Rotation and scaling (with shifts and flips) through MXNet's affine sampler."""

    def __init__(self, cfg: AugmentConfig, background: float):
        self.cfg, self.background = cfg, background

    def step_columns(self, order, labels, seed, epoch):
        return [order.astype(np.int32), affine_draws(len(order), self.cfg, seed, epoch)]

    def gather(self):
        return TakeWarped(self.background)


class ShiftedCopies(NoAugmentation):
    """Whole-pixel shifts from a copy of the padded set per horizontal placement."""

    def __init__(self, cfg: AugmentConfig, background: float):
        self.cfg, self.background = cfg, background

    def device_arrays(self, normalised, labels):
        return (shifted_copies(pad_images(normalised, self.cfg.shift, self.background),
                               self.cfg),)

    def step_columns(self, order, labels, seed, epoch):
        rows, selectors = shift_draws(order, self.cfg, seed, epoch)
        return [copy_rows(rows, selectors, len(labels), self.cfg),
                labels[order].astype(np.float32)]

    def gather(self):
        return TakeCopies()


class Shifted(ShiftedCopies):
    """Whole-pixel shifts from the padded set, moved sideways by 0/1 matrices."""

    def device_arrays(self, normalised, labels):
        return (pad_images(normalised, self.cfg.shift, self.background),)

    def step_columns(self, order, labels, seed, epoch):
        return [*shift_draws(order, self.cfg, seed, epoch), labels[order].astype(np.float32)]

    def gather(self):
        return TakeShifted(self.cfg.shift)


class Elastic(Warped):
    """Elastic distortion on MXNet's operators (kernels: mxnet, and GPU contexts), after the
    affine changes when any are set. The displacement fields are drawn on the device, from
    MXNet's generator, which the training loop seeds from (seed, step) before every step: a
    resumed run draws the same fields."""

    def step_columns(self, order, labels, seed, epoch):
        if not self.cfg.affine:
            return [order.astype(np.int32)]
        return super().step_columns(order, labels, seed, epoch)

    def gather(self):
        return TakeElastic(self.cfg, self.background)


class CompiledElastic(Warped):
    """Elastic distortion after the affine draws, by the compiled `mnist_elastic_warp`: one
    resampling of each image, its field drawn from a hash of (seed, epoch, image index)."""

    def step_columns(self, order, labels, seed, epoch):
        draws = (affine_draws(len(order), self.cfg, seed, epoch) if self.cfg.affine
                 else np.tile(IDENTITY_DRAW, (len(order), 1)))
        keys = np.empty((len(order), 2), dtype=np.int32)
        keys[:, 0], keys[:, 1] = np.int64(seed).astype(np.uint32).view(np.int32), epoch
        return [order.astype(np.int32), draws, keys]

    def gather(self):
        return TakeCompiledElastic(self.cfg, self.background)


IDENTITY_DRAW = np.array([0, 1, 0, 0, 1], dtype=np.float32)  # angle, scale, dy, dx, mirror


def background_pixel(normalization: Normalization) -> float:
    """A black pixel, normalised: the background of every MNIST-like image."""
    return float(normalise(np.zeros((1, 1), np.uint8), normalization)[0, 0])


def augmentation(cfg: AugmentConfig | None, normalization: Normalization,
                 elastic_kernel: str = kernels.COMPILED) -> NoAugmentation:
    """The strategy for `cfg`; what moves in from outside an image is a black pixel.
    `elastic_kernel` (kernels.COMPILED or kernels.MXNET) is what distorts elastically."""
    if cfg is None or not cfg.active:
        return NoAugmentation()
    background = background_pixel(normalization)
    if cfg.elastic.alpha > 0:
        compiled = elastic_kernel == kernels.COMPILED
        return (CompiledElastic if compiled else Elastic)(cfg, background)
    if cfg.rotate or cfg.scale:
        return Warped(cfg, background)
    return (ShiftedCopies if uses_copies(cfg) else Shifted)(cfg, background)


class Take(gluon.HybridBlock):
    """(images, labels, (B,) indices) -> the batch and its labels."""

    def hybrid_forward(self, F, images, labels, index):
        return F.take(images, index), F.take(labels, index)


class TakeWarped(gluon.HybridBlock):
    """(images, labels, (B,) indices, (B, 5) draws) -> the warped batch and its labels."""

    def __init__(self, background: float, **kwargs):
        super().__init__(**kwargs)
        self.warp = Warp(background)

    def hybrid_forward(self, F, images, labels, index, draws):
        return self.warp(F.take(images, index), draws), F.take(labels, index)


class TakeCopies(gluon.HybridBlock):
    """(shifted copies, (B, 28) rows, (B,) labels) -> the shifted batch and its labels."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.copies = ShiftCopies()

    def hybrid_forward(self, F, copies, rows, labels):
        return self.copies(copies, rows), labels


class TakeShifted(gluon.HybridBlock):
    """(padded rows, (B, 28) rows, (B,) offsets, (B,) labels) -> shifted batch, labels."""

    def __init__(self, shift: int, **kwargs):
        super().__init__(**kwargs)
        self.shift = Shift(shift)

    def hybrid_forward(self, F, rows_data, rows, offsets, labels):
        return self.shift(rows_data, rows, offsets), labels


def blur_matrix(sigma: float) -> np.ndarray:
    """28 x 28: multiplying an image's rows (or columns) by it is a Gaussian blur of `sigma`
    pixels over 3 sigma each way, zero beyond the edge."""
    radius = int(math.ceil(3 * sigma))
    offsets = np.arange(IMAGE_SIZE)[None, :] - np.arange(IMAGE_SIZE)[:, None]
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    matrix = np.where(np.abs(offsets) <= radius, np.exp(-0.5 * (offsets / sigma) ** 2), 0.0)
    return (matrix / taps.sum()).astype(np.float32)


class TakeElastic(gluon.HybridBlock):
    """(images, labels, (B,) indices[, (B, 5) affine draws]) -> the distorted batch and its
    labels. Each image gets a field of uniform [-1, 1] displacements in x and y, blurred by a
    Gaussian (two batched products with a blur matrix: on MXNet's CPU kernels several times
    faster than a convolution), scaled by alpha pixels, and is resampled bilinearly."""

    def __init__(self, cfg: AugmentConfig, background: float, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.background = cfg.elastic.alpha, background
        self.warp = Warp(background) if cfg.affine else None
        self.blur = self.params.get_constant("blur", blur_matrix(cfg.elastic.sigma)[None])
        # The sampler's grid is in [-1, 1] over the pixel centres: x first, then y.
        span = np.linspace(-1, 1, IMAGE_SIZE, dtype=np.float32)
        self.identity = self.params.get_constant("identity",
                                                 np.stack(np.meshgrid(span, span))[None])

    def hybrid_forward(self, F, images, labels, index, *draws, blur, identity):
        batch = F.take(images, index)
        if self.warp is not None:
            batch = self.warp(batch, draws[0])
        square = F.reshape(batch - self.background, shape=(-1, 1, IMAGE_SIZE, IMAGE_SIZE))
        noise = F.random.uniform_like(F.concat(square, square, dim=1), low=-1, high=1)
        planes = F.reshape(noise, shape=(-1, IMAGE_SIZE, IMAGE_SIZE))
        matrices = F.broadcast_like(blur, planes)
        field = F.batch_dot(matrices, F.batch_dot(planes, matrices, transpose_b=True))
        step = self.alpha * 2.0 / (IMAGE_SIZE - 1)  # alpha pixels in the grid's units
        grid = F.broadcast_add(F.reshape(field, shape=(-1, 2, IMAGE_SIZE, IMAGE_SIZE)) * step,
                               identity)
        moved = F.BilinearSampler(square, grid)  # zero outside, i.e. the background
        return F.reshape(moved, shape=(-1, PIXELS)) + self.background, F.take(labels, index)


class TakeCompiledElastic(gluon.HybridBlock):
    """(images, labels, (B,) indices, (B, 5) affine draws, (B, 2) keys) -> the distorted batch
    and its labels. No gradient flows back to the images: BlockGrad tells MXNet so."""

    def __init__(self, cfg: AugmentConfig, background: float, **kwargs):
        super().__init__(**kwargs)
        if (missing := kernels.load()) is not None:
            raise RuntimeError(f"the compiled elastic warp is not available: {missing}")
        self.options = {"alpha": cfg.elastic.alpha, "sigma": cfg.elastic.sigma,
                        "background": background}

    def hybrid_forward(self, F, images, labels, index, draws, keys):
        batch = F.mnist_elastic_warp(images, index, draws, keys, **self.options)
        return F.BlockGrad(batch), F.take(labels, index)
