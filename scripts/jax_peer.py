"""The JAX peer of scripts/bench.py: the same MLP, data, order and optimizer, with each epoch
compiled as one `jax.lax.scan` over its steps.

JAX 0.10 needs numpy 2 and MXNet 1.9 needs numpy 1, so this runs in an interpreter of its own
(`make .venv-jax`), started by bench.py and driven over its standard streams:

    python scripts/jax_peer.py FOLDER

FOLDER holds `data.npz` (the normalised training images, labels, the initial parameters and
the optimizer's settings, written by bench.py). The peer compiles, prints `ready`, then reads
one line per epoch, `epoch ORDER.npz` (the epoch's sample order and each step's learning
rate), trains that epoch and prints its seconds. An empty line or the end of input ends it.
"""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def loss_and_correct(params, images, labels):
    w1, b1, w2, b2 = params  # MXNet's layout: (out, in)
    hidden = jax.nn.relu(images @ w1.T + b1)
    logits = hidden @ w2.T + b2
    log_p = jax.nn.log_softmax(logits)
    loss = -jnp.take_along_axis(log_p, labels[:, None], axis=1).sum()
    return loss, (jnp.argmax(logits, axis=1) == labels).sum()


@partial(jax.jit, static_argnames=("momentum", "wd"), donate_argnums=(0, 1))
def train_epoch(params, moms, images, labels, steps, lrs, momentum: float, wd: float):
    """One epoch: `steps` (steps x batch indices) gathered from `images`, with NAG as MXNet's
    `nag_mom_update` computes it (weight decay added to the mean gradient)."""
    batch = steps.shape[1]

    def step(carry, inputs):
        params, moms, loss_sum, correct = carry
        index, lr = inputs
        (loss, right), grads = jax.value_and_grad(loss_and_correct, has_aux=True)(
            params, images[index], labels[index])
        new_params, new_moms = [], []
        for w, g, m in zip(params, grads, moms, strict=True):
            g = g / batch + wd * w
            m = momentum * m + g
            new_params.append(w - lr * (g + momentum * m))
            new_moms.append(m)
        return (tuple(new_params), tuple(new_moms), loss_sum + loss, correct + right), None

    zero = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
    (params, moms, loss_sum, correct), _ = jax.lax.scan(step, (params, moms, *zero),
                                                        (steps, lrs))
    return params, moms, loss_sum, correct


def main() -> int:
    folder = Path(sys.argv[1])
    saved = np.load(folder / "data.npz")
    images = jnp.asarray(saved["images"])
    labels = jnp.asarray(saved["labels"].astype(np.int32))
    params = tuple(jnp.asarray(saved[name]) for name in ("w1", "b1", "w2", "b2"))
    moms = tuple(jnp.zeros_like(p) for p in params)
    momentum, wd = float(saved["momentum"]), float(saved["wd"])
    print("ready", jax.__version__, np.__version__, flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        plan = np.load(line.split(maxsplit=1)[1].strip())
        started = time.perf_counter()
        steps = jnp.asarray(plan["steps"].astype(np.int32))
        params, moms, loss_sum, correct = train_epoch(
            params, moms, images, labels, steps, jnp.asarray(plan["lrs"], jnp.float32),
            momentum=momentum, wd=wd)
        float(loss_sum), int(correct)  # the host waits for the epoch, as ours does
        seconds = time.perf_counter() - started
        print(f"{seconds} {float(loss_sum) / steps.size} {int(correct) / steps.size}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
