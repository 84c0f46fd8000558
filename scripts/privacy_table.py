"""The privacy each run spent and the accuracy it bought: for each run folder, its best.params'
epsilon and delta (as its sidecar records them, and as dp-accounting's PLD accountant counts
them again from that record), its validation accuracy, and its accuracy on the test set as
mnist-eval reports it. The table in README.md and docs/privacy.md.

    python scripts/privacy_table.py --data-root DIR runs/private runs/private-eps8 ...
"""

from __future__ import annotations

import argparse

import dp_accounting
from dp_accounting import pld

import mnist_gluon
from mnist_gluon.checkpoint import read_checkpoint


def recounted(record) -> float:
    """The epsilon of the sidecar's record, counted afresh by dp-accounting's PLD accountant."""
    counter = pld.PLDAccountant()
    counter.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
        record.sample_rate, dp_accounting.GaussianDpEvent(record.noise_multiplier)),
        record.steps))
    return counter.get_epsilon(record.delta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="the folder of the MNIST files")
    parser.add_argument("runs", nargs="+", help="run folders mnist-train wrote with train.privacy")
    args = parser.parse_args()
    print("| run | model | epsilon (recorded / PLD again) | delta | noise | steps | validation "
          "| test |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for run in args.runs:
        best = f"{run}/best.params"
        sidecar = read_checkpoint(best).sidecar
        spent, arch = sidecar.privacy, sidecar.architecture
        report = mnist_gluon.evaluate(best, data_root=args.data_root)
        print(f"| {run} | {arch.describe()} | {spent.epsilon:.3f} / {recounted(spent):.3f} | "
              f"{spent.delta:g} | {spent.noise_multiplier:.4g} | {spent.steps} | "
              f"{sidecar.best_val_accuracy:.2%} | **{report.accuracy:.2%}** |")


if __name__ == "__main__":
    main()
