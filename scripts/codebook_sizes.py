"""How many shared values per layer a compressed model needs: each checkpoint's validation
accuracy (the images its run held out) and model.mnc's size at several codebook sizes, the
measurement behind mnist_gluon.compression.mnc.CODEBOOK (docs/compression.md).

    python scripts/codebook_sizes.py --data-root DIR runs/pruned runs/lenet-pruned

The test set is not read.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import mnist_gluon
from mnist_gluon.checkpoint import read_checkpoint
from mnist_gluon.compression.mnc import encode
from mnist_gluon.data import DATASETS, read_split, split_validation

SIZES = (8, 16, 32, 64, 256)


def validation_set(sidecar, data_root: str) -> tuple[np.ndarray, np.ndarray]:
    """The images the checkpoint's run held out, as its run drew them."""
    config = sidecar.config
    train = read_split(DATASETS[config.data.name], "train", root=data_root, download=False)
    _, _, images, labels = split_validation(train.images, train.labels, config.data.val_size,
                                            config.seed)
    return images, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    for run_dir in args.runs:
        checkpoint = read_checkpoint(run_dir / "best.params")
        images, labels = validation_set(checkpoint.sidecar, args.data_root)
        dense = mnist_gluon.load(run_dir / "best.params").predict(images).labels
        print(f"{run_dir}: checkpoint {np.mean(dense == labels):.2%} on {len(labels):,} "
              "validation images")
        for size in SIZES:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "model.mnc"
                path.write_bytes(encode(checkpoint, size))
                got = mnist_gluon.load(path).predict(images).labels
                print(f"  {size:>3} shared values: {np.mean(got == labels):.2%}, "
                      f"{path.stat().st_size:,} bytes, {np.sum(got != dense)} labels changed")


if __name__ == "__main__":
    main()
