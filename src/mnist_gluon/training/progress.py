"""What a run shows while it trains: a tqdm bar on a terminal, one plain line per epoch
otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from ..checkpoint import EpochProgress, EpochResult


class Log:
    def __init__(self, quiet: bool, prefix: str = ""):
        self.interactive = sys.stdout.isatty() and not quiet
        self.prefix = prefix  # "[rank 1/2] " in a distributed run
        self.bar = None

    def line(self, text: str) -> None:
        text = self.prefix + text
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int, batch_size: int) -> Callable | None:
        if not self.interactive:
            return None
        from tqdm import tqdm

        self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step", leave=False,
                        dynamic_ncols=True)
        started = time.perf_counter()
        done = [0]

        def on_progress(now: EpochProgress) -> None:
            self.bar.update(now.steps_done - done[0])
            done[0] = now.steps_done
            seen = max((now.steps_done - now.skipped) * batch_size, 1)
            loss, correct = now.totals
            rate = now.steps_done * batch_size / (time.perf_counter() - started)
            self.bar.set_postfix(loss=f"{loss / seen:.4f}", acc=f"{correct / seen:.4f}",
                                 samples_s=f"{rate:,.0f}")

        return on_progress

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_epoch(result: EpochResult, epochs: int) -> str:
    val = ("" if result.val_accuracy is None else
           f"  val_loss {result.val_loss:.4f}  val_acc {result.val_accuracy:.4f}")
    if result.average_val_accuracy is not None:
        val += f"  avg_val_acc {result.average_val_accuracy:.4f}"
    return (f"epoch {result.epoch}/{epochs}  loss {result.train_loss:.4f}  "
            f"acc {result.train_accuracy:.4f}{val}  lr {result.lr:.2e}  "
            f"{result.samples_per_second:,.0f} samples/s  {result.seconds:.1f}s")
