#!/usr/bin/env python
"""TPE with pruning against an exhaustive grid, for the same budget of trials, on MNIST.

    python scripts/search_budget.py --json search.json      # about 10 minutes on 2 cores

Both search base.yaml's learning rate and weight decay (10 epochs a trial, selection on the
validation split only). The grid tries 4 learning rates x 3 weight decays; TPE draws 12 trials
from the ranges around them, with the median pruner stopping poor trials after any epoch.
Each seed is a new validation split and a new sampler seed. Reported: the epochs trained in
all, and the best validation accuracy reached.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SEARCHES = {
    "grid": ["--grid", "train.lr=0.05,0.1,0.2,0.4", "--grid",
             "train.weight_decay=0.0001,0.0005,0.001", "--sampler", "grid"],
    "tpe+median": ["--range", "train.lr=0.05:0.4:log", "--range",
                   "train.weight_decay=0.0001:0.001:log", "--sampler", "tpe", "--pruner",
                   "median", "--trials", "12"],
}


def search(name: str, seed: int, out: Path, data_root: str) -> dict:
    folder = out / f"{name}-seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([str(BIN / "mnist-sweep"), "--config", "base", "--out", str(folder),
                    "--data-root", data_root, "--seed", str(seed), "--set", f"seed={seed}",
                    "--set", "track.tensorboard=false", *SEARCHES[name]],
                   check=True, stdout=subprocess.DEVNULL)
    rows = json.loads((folder / "results.json").read_text())
    complete = [r for r in rows if r["state"] == "complete"]
    return {"search": name, "seed": seed, "trials": len(rows),
            "pruned": sum(r["state"] == "pruned" for r in rows),
            "epochs": sum(r["epochs_run"] or 0 for r in rows),
            "best_val_accuracy": max(r["best_val_accuracy"] for r in complete)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared/data/mnist"))
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--out", type=Path, default=Path("sweeps/search-budget"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = [search(name, int(seed), args.out, args.data_root)
               for seed in args.seeds.split(",") for name in SEARCHES]
    print(f"{'search':<12} {'seed':>4} {'trials':>6} {'pruned':>6} {'epochs':>6} "
          f"{'best val acc':>12}")
    for f in figures:
        print(f"{f['search']:<12} {f['seed']:>4} {f['trials']:>6} {f['pruned']:>6} "
              f"{f['epochs']:>6} {f['best_val_accuracy']:>12.4f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
