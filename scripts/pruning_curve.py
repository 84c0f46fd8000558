"""Accuracy against sparsity, for the runs of a pruning recipe at several sparsities: the table
and the picture in docs/compression.md.

    python scripts/pruning_curve.py --data-root DIR --out docs/pruning.png \
        --mlp runs/best runs/pruned-90 ... --lenet runs/lenet runs/lenet-pruned-90 ...

Each run folder's best.params (chosen on validation by its run) is scored on the test set by
mnist_gluon.evaluate, and compressed as mnist-export --format compressed would, whose file is
scored too. Prints a Markdown table; draws test accuracy against the fraction of weights
pruned, one line per kind, with the compressed file's size beside each point.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import mnist_gluon
from mnist_gluon.checkpoint import read_checkpoint
from mnist_gluon.compression.mnc import encode


def measure(run_dir: Path, data_root: str) -> dict:
    best = run_dir / "best.params"
    checkpoint = read_checkpoint(best)
    weights = [a for name, a in checkpoint.arrays.items() if name.endswith(".weight")]
    content = encode(checkpoint)
    with tempfile.TemporaryDirectory() as folder:
        mnc = Path(folder) / "model.mnc"
        mnc.write_bytes(content)
        compressed = mnist_gluon.evaluate(mnc, data_root=data_root).accuracy
    return {
        "run": str(run_dir),
        "sparsity": float(sum((w == 0).sum() for w in weights) / sum(w.size for w in weights)),
        "nonzero": int(sum((a != 0).sum() for a in checkpoint.arrays.values())),
        "val": json.loads((run_dir / "best.json").read_text())["best_val_accuracy"],
        "test": mnist_gluon.evaluate(best, data_root=data_root).accuracy,
        "mnc_test": compressed,
        "mnc_bytes": len(content),
        "params_bytes": best.stat().st_size,
    }


def table(rows: dict[str, list[dict]]) -> str:
    lines = ["| kind | run | weights pruned | nonzero parameters | validation | test | "
             "model.mnc | its test accuracy |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for kind, measured in rows.items():
        for r in measured:
            lines.append(f"| {kind} | {r['run']} | {r['sparsity']:.1%} | {r['nonzero']:,} | "
                         f"{r['val']:.2%} | {r['test']:.2%} | {r['mnc_bytes']:,} B | "
                         f"{r['mnc_test']:.2%} |")
    return "\n".join(lines)


def draw(rows: dict[str, list[dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    for (kind, measured), colour in zip(rows.items(), ("tab:blue", "tab:orange"), strict=False):
        measured = sorted(measured, key=lambda r: r["sparsity"])
        x = [100 * r["sparsity"] for r in measured]
        axis.plot(x, [100 * r["test"] for r in measured], "o-", color=colour,
                  label=f"{kind}: checkpoint")
        axis.plot(x, [100 * r["mnc_test"] for r in measured], "x--", color=colour,
                  label=f"{kind}: model.mnc")
        for r, at in zip(measured, x, strict=True):
            axis.annotate(f"{r['mnc_bytes'] / 1024:.0f} KiB", (at, 100 * r["mnc_test"]),
                          textcoords="offset points", xytext=(0, -14), ha="center",
                          fontsize=7, color=colour)
    axis.set_xlabel("weights pruned (%)")
    axis.set_ylabel("test accuracy (%), 10,000 images")
    axis.set_title("Accuracy against sparsity (each point chosen on validation)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="center left")
    figure.tight_layout()
    figure.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mlp", nargs="*", type=Path, default=[])
    parser.add_argument("--lenet", nargs="*", type=Path, default=[])
    args = parser.parse_args()
    rows = {kind: [measure(run, args.data_root) for run in runs]
            for kind, runs in (("MLP", args.mlp), ("LeNet", args.lenet)) if runs}
    print(table(rows))
    draw(rows, args.out)
    print(f"wrote {args.out}; medians of the test accuracies: "
          + ", ".join(f"{k} {np.median([r['test'] for r in v]):.2%}" for k, v in rows.items()))


if __name__ == "__main__":
    main()
