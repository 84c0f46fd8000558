"""Weight sharing (Han et al., Deep Compression, 2016): a layer's kept weights replaced by the
nearest of a few shared values, found by k-means from a linear start (which, unlike a random or
density-based one, keeps centroids for the rare large weights that matter most)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ITERATIONS = 100  # Lloyd's iterations at most; a 1-D k-means settles long before


def kmeans(values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids as float32, ascending; each value's centroid index) for 1-D `values`, with at
    most `size` centroids (fewer when the values have fewer distinct ones)."""
    values = np.asarray(values, np.float64).ravel()
    distinct = np.unique(values)
    if distinct.size <= size:
        return distinct.astype(np.float32), np.searchsorted(distinct, values)
    centroids = np.linspace(values.min(), values.max(), size)
    for _ in range(ITERATIONS):
        index = nearest(centroids, values)
        counts = np.bincount(index, minlength=size)
        sums = np.bincount(index, weights=values, minlength=size)
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.array_equal(moved, centroids):
            break
        centroids = np.sort(moved)
    centroids = centroids.astype(np.float32)
    return centroids, nearest(centroids.astype(np.float64), values)


def nearest(centroids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The index of the nearest of the ascending `centroids` to each value."""
    return np.searchsorted((centroids[:-1] + centroids[1:]) / 2, values)


@dataclass(frozen=True)
class Clusters:
    """Which shared value each kept weight of a layer takes, fixed for a sharing phase: `tie`
    then costs one pass over the kept weights."""

    kept: np.ndarray  # flat positions of the kept (nonzero) weights
    index: np.ndarray  # each kept weight's cluster
    counts: np.ndarray  # each cluster's size

    @classmethod
    def of(cls, weights: np.ndarray, size: int) -> Clusters:
        """The k-means clusters of the nonzero `weights`, or, once they hold no more than
        `size` distinct values (tied already, as a checkpoint in a sharing phase is), one
        cluster per value."""
        flat = weights.ravel()
        kept = np.flatnonzero(flat)
        index = kmeans(flat[kept], size)[1] if kept.size else np.zeros(0, np.int64)
        return cls(kept, index, np.bincount(index, minlength=index.max() + 1 if index.size
                                            else 0))

    def tie(self, weights: np.ndarray) -> np.ndarray:
        """`weights` with each cluster replaced by its mean and the pruned ones zero: after an
        update, the shared values move by the mean of their weights' steps."""
        values = weights.ravel()[self.kept].astype(np.float64)
        means = np.bincount(self.index, weights=values, minlength=self.counts.size) / np.maximum(
            self.counts, 1)
        out = np.zeros(weights.size, np.float32)
        out[self.kept] = means[self.index]
        return out.reshape(weights.shape)
