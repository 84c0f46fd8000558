"""Magnitude pruning: which weights a run keeps, epoch by epoch (train.prune).

A mask per weight layer (1 keep, 0 pruned; biases are never pruned) is computed from the
weights' magnitudes at the start of an epoch and multiplied into the weights after every update
(training.optim.Updater), so a pruned weight stays exactly zero whatever the optimizer, and
into the weight average. Pruned weights are already zero when the next mask is computed, so a
mask only ever grows sparser.
"""

from __future__ import annotations

import numpy as np

from ..config import PruneConfig


def prunable(names) -> list[str]:
    """The parameters pruning applies to: the weights, not the biases."""
    return [name for name in names if name.endswith(".weight")]


def sparsity_at(epoch: int, cfg: PruneConfig) -> float:
    """The fraction of weights pruned during `epoch` (1-based): all of it from the first
    epoch (one_shot), or rising as s * (1 - (1 - e/E)^3) to s at epoch E (gradual)."""
    if cfg.sparsity is None:
        return 0.0
    if cfg.schedule == "one_shot":
        return cfg.sparsity
    done = min(epoch, cfg.epochs) / cfg.epochs
    return cfg.sparsity * (1.0 - (1.0 - done) ** 3)


def sharing(cfg: PruneConfig, epoch: int, epochs: int) -> bool:
    """Whether `epoch` of a run of `epochs` ties its weights to shared values: one of the last
    `share_epochs`, with train.prune.shared_values set."""
    return cfg.shared_values is not None and epoch > epochs - cfg.share_epochs


def magnitude_masks(weights: dict[str, np.ndarray], sparsity: float,
                    scope: str) -> dict[str, np.ndarray]:
    """Masks (float32, 1 keep, 0 pruned) that zero the smallest `sparsity` of `weights` by
    magnitude: ranked across all of them (scope global) or within each (layer). Ties are
    broken by position, so the same weights always give the same masks."""
    if scope == "layer":
        return {name: magnitude_masks({name: w}, sparsity, "global")[name]
                for name, w in weights.items()}
    flat = np.concatenate([np.abs(w).ravel() for w in weights.values()])
    pruned = int(round(sparsity * flat.size))
    keep = np.ones(flat.size, np.float32)
    keep[np.argsort(flat, kind="stable")[:pruned]] = 0.0
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start:start + w.size].reshape(w.shape)
        start += w.size
    return masks


def sparsity_of(masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Each masked layer's fraction of pruned weights, as a sidecar records it."""
    return {name: round(float(1.0 - mask.mean()), 6) for name, mask in masks.items()}
