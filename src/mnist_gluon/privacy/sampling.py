"""What a private run draws at random: which examples each step's batch holds (Poisson
sampling, as the accountant assumes) and the noise added to its gradient. Both come from the
run's secret key, never from its seed: the seed is in every config and sidecar, and anyone who
knew the batches or the noise could take the privacy back. The key is saved with the
optimizer's state (the `.states` file beside each checkpoint), so a resumed run draws what the
uninterrupted run would have, and an exported model carries none of it."""

from __future__ import annotations

import secrets

import numpy as np

KEY_WORDS = 4  # 128 bits, as 32-bit words (an int64 array in the .states file)
SAMPLING, NOISE = 0, 1  # the two streams drawn from the key


def new_key() -> np.ndarray:
    return np.array([secrets.randbits(32) for _ in range(KEY_WORDS)], dtype=np.int64)


def generator(key: np.ndarray, stream: int, step: int) -> np.random.Generator:
    entropy = int.from_bytes(np.asarray(key, dtype=np.uint32).tobytes(), "little")
    return np.random.Generator(np.random.Philox(
        np.random.SeedSequence(entropy, spawn_key=(stream, step))))


def poisson_batch(key: np.ndarray, step: int, examples: int, rate: float) -> np.ndarray:
    """The training examples (indices, ascending) in global step `step`'s batch: each one
    independently, with probability `rate`."""
    return np.flatnonzero(generator(key, SAMPLING, step).random(examples) < rate)


def poisson_batches(key: np.ndarray, first_step: int, steps: int, examples: int,
                    rate: float) -> list[np.ndarray]:
    return [poisson_batch(key, first_step + i, examples, rate) for i in range(steps)]


def gaussian_noise(key: np.ndarray, step: int, shapes: list[tuple[int, ...]]
                   ) -> list[np.ndarray]:
    """Standard normal float32 arrays of `shapes`, for global step `step`."""
    draw = generator(key, NOISE, step)
    return [draw.standard_normal(shape, dtype=np.float32) for shape in shapes]
