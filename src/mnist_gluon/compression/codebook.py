"""Weight sharing (Han et al., Deep Compression, 2016): a layer's kept weights replaced by the
nearest of a few shared values, found by k-means from a linear start (which, unlike a random or
density-based one, keeps centroids for the rare large weights that matter most)."""

from __future__ import annotations

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


def clusters(weights: np.ndarray, size: int) -> np.ndarray:
    """Each weight's shared value, as an index (-1 for a pruned, zero weight): the k-means
    clusters of the nonzero weights, or, once they hold no more than `size` distinct values
    (tied already, as a checkpoint in a sharing phase is), one cluster per value."""
    flat = weights.ravel()
    ids = np.full(flat.size, -1, np.int64)
    kept = flat != 0
    if kept.any():
        ids[kept] = kmeans(flat[kept], size)[1]
    return ids.reshape(weights.shape)


def tied(weights: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """`weights` with each cluster of `ids` replaced by its mean, and the pruned ones (-1)
    zero: after an update, the shared values move by the mean of their weights' steps."""
    flat, index = weights.ravel().astype(np.float64), ids.ravel()
    kept = index >= 0
    count = np.bincount(index[kept], minlength=index.max() + 1)
    means = np.bincount(index[kept], weights=flat[kept], minlength=count.size) / np.maximum(
        count, 1)
    out = np.zeros(flat.size, np.float32)
    out[kept] = means[index[kept]]
    return out.reshape(weights.shape)
