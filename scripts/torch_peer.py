#!/usr/bin/env python
"""base.yaml's MLP or lenet.yaml's LeNet in plain PyTorch, written as a practitioner would
write it without this project: scripts/bench.py times it as a whole process against
`mnist-train`.

    python scripts/torch_peer.py --data-root ../shared/data/mnist --epochs 3 --batch-size 64
    python scripts/torch_peer.py --data-root ../shared/data/mnist --model lenet --epochs 2

The same work as `mnist-train --config base` (or `--config lenet` without augmentation): the
gzipped IDX files read, 5,000 training images held out for validation, pixels normalised by
the training set's mean and std; 784-128-10 with ReLU (or conv 32@5x5, pool, conv 64@5x5,
pool, 256 with dropout 0.5, 10) trained by SGD with Nesterov momentum 0.9, weight decay 5e-4,
lr 0.2 (0.05) warmed up over the first epoch and then cosine-decayed per step; each epoch
validated and its weights saved (last.pt, and best.pt when validation accuracy rose).
PyTorch's own DataLoader makes the batches, and torch uses every core, as it does by default.
"""

from __future__ import annotations

import argparse
import gzip
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--model", choices=("mlp", "lenet"), default="mlp")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, help="default: 256 (mlp), 128 (lenet)")
    parser.add_argument("--out", type=Path, default=Path("runs/torch"))
    args = parser.parse_args()
    args.batch_size = args.batch_size or (256 if args.model == "mlp" else 128)
    torch.manual_seed(42)

    images = read_idx(args.data_root / "train-images-idx3-ubyte.gz")
    labels = read_idx(args.data_root / "train-labels-idx1-ubyte.gz")
    order = np.random.default_rng(42).permutation(len(images))
    val, train = order[:5000], order[5000:]
    scaled = images.reshape(len(images), -1).astype(np.float32) / 255
    mean, std = scaled[train].mean(), scaled[train].std()
    x = torch.from_numpy((scaled - mean) / std)
    y = torch.from_numpy(labels.astype(np.int64))
    loader = DataLoader(TensorDataset(x[train], y[train]), batch_size=args.batch_size,
                        shuffle=True, drop_last=True)
    x_val, y_val = x[val], y[val]

    if args.model == "mlp":
        model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    else:
        model = nn.Sequential(
            nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 4 * 4, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2 if args.model == "mlp" else 0.05,
                                momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = len(loader)
    total, warmup = args.epochs * steps, steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    loss_fn = nn.CrossEntropyLoss()
    args.out.mkdir(parents=True, exist_ok=True)
    best = 0.0
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        model.train()
        loss_sum, correct = torch.zeros(()), torch.zeros(())
        for batch, target in loader:
            optimizer.zero_grad()
            logits = model(batch)
            loss = loss_fn(logits, target)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == target).sum()
        model.eval()
        with torch.no_grad():
            val_logits = model(x_val)
            val_loss = loss_fn(val_logits, y_val).item()
            val_accuracy = (val_logits.argmax(1) == y_val).float().mean().item()
        seconds = time.perf_counter() - started
        print(f"epoch {epoch}/{args.epochs}  loss {loss_sum.item() / steps:.4f}  "
              f"acc {correct.item() / (steps * args.batch_size):.4f}  val_loss {val_loss:.4f}  "
              f"val_acc {val_accuracy:.4f}  {seconds:.1f}s", flush=True)
        torch.save(model.state_dict(), args.out / "last.pt")
        if val_accuracy > best:
            best = val_accuracy
            torch.save(model.state_dict(), args.out / "best.pt")


if __name__ == "__main__":
    main()
