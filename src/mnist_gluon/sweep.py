"""Hyperparameter sweeps: every trial a normal `mnist-train` run folder, chosen on validation.

A sweep folder holds `sweep.json` (the plan), one `trial-NNN/` run folder and `trial-NNN.log`
per trial, and the results as `results.csv` and `results.json`, with the best trial's config
as `best.yaml`. Running the same command again skips finished trials and resumes interrupted
ones. Trials are chosen on validation accuracy: the test set is never looked at.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import Sidecar, read_sidecar, sidecar_path
from .config import load_config, parse_override
from .errors import CheckpointError, ConfigError, OutputError
from .files import atomic_write_text
from .training.state import finished as run_finished

PLAN = "sweep.json"


@dataclass
class Trial:
    name: str
    overrides: list[str]  # KEY=VALUE, as --set takes them

    def settings(self) -> dict[str, str]:
        return dict(o.split("=", 1) for o in self.overrides)


def parse_grid(grid: list[str]) -> list[tuple[str, list[str]]]:
    """`train.lr=0.001,0.002` -> ("train.lr", ["0.001", "0.002"])."""
    axes = []
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--grid {item!r} is not KEY=V1,V2,...; write e.g. "
                              "--grid train.lr=0.001,0.002")
        axes.append((key.strip(), [v.strip() for v in values.split(",")]))
    keys = [key for key, _ in axes]
    if len(set(keys)) != len(keys):
        raise ConfigError("--grid names a key twice; give all its values in one --grid")
    return axes


def plan_trials(axes: list[tuple[str, list[str]]], random_count: int | None,
                seed: int) -> list[Trial]:
    combos = list(itertools.product(*[[f"{key}={v}" for v in values] for key, values in axes]))
    if random_count is not None:
        if random_count < 1:
            raise ConfigError(f"--random {random_count}: ask for 1 trial or more")
        combos = random.Random(seed).sample(combos, min(random_count, len(combos)))
    return [Trial(f"trial-{i:03d}", list(combo)) for i, combo in enumerate(combos)]


def prepare(out: Path, config_path: Path, base: list[str], trials: list[Trial]) -> None:
    """Check every trial's config, and that `out` holds this sweep or nothing."""
    for trial in trials:
        load_config(config_path, [*base, *trial.overrides])
    plan = {"config": str(config_path), "set": base,
            "trials": [{"name": t.name, "overrides": t.overrides} for t in trials]}
    existing = out / PLAN
    if existing.exists():
        if json.loads(existing.read_text()) != plan:
            raise OutputError(f"{out} holds another sweep ({PLAN} differs); pass --out DIR "
                              "for a new one, or the same options to continue that one")
        return
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} is not empty and holds no sweep; pass --out DIR")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"sweep folder {out} cannot be created ({error.strerror})") from None
    atomic_write_text(existing, json.dumps(plan, indent=2) + "\n")


def trial_sidecar(run_dir: Path, name: str) -> Sidecar | None:
    """The sidecar of a trial's `name` checkpoint; None while there is none (or a damaged
    one, which the trial's own resume then reports)."""
    params = run_dir / f"{name}.params"
    if not sidecar_path(params).exists():
        return None
    try:
        return read_sidecar(params)
    except CheckpointError:
        return None


def finished(run_dir: Path) -> bool:
    last = trial_sidecar(run_dir, "last")
    return last is not None and run_finished(last)


def command(trial: Trial, out: Path, config_path: Path, base: list[str]) -> list[str]:
    run_dir = out / trial.name
    train = [str(Path(sys.executable).parent / "mnist-train"), "--quiet"]
    if (run_dir / "last.params").exists():
        return [*train, "--resume", str(run_dir)]
    sets = [arg for o in [*base, *trial.overrides] for arg in ("--set", o)]
    return [*train, "--config", str(config_path), "--out", str(run_dir), *sets]


def run_trials(trials: list[Trial], out: Path, config_path: Path, base: list[str], jobs: int,
               say) -> dict[str, int]:
    """Run the unfinished trials, `jobs` at a time; their exit statuses by name."""
    pending = [t for t in trials if not finished(out / t.name)]
    for t in trials:
        if t not in pending:
            say(f"{t.name}: finished earlier, skipped")
    running: dict[str, tuple[subprocess.Popen, object]] = {}
    statuses: dict[str, int] = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                trial = pending.pop(0)
                log = open(out / f"{trial.name}.log", "a")  # noqa: SIM115 - closed below
                process = subprocess.Popen(command(trial, out, config_path, base), stdout=log,
                                           stderr=subprocess.STDOUT)
                running[trial.name] = (process, log)
                say(f"{trial.name}: started  {' '.join(trial.overrides)}")
            time.sleep(0.2)
            for name, (process, log) in list(running.items()):
                if process.poll() is not None:
                    log.close()
                    statuses[name] = process.returncode
                    del running[name]
                    ended = "done" if process.returncode == 0 else (
                        f"failed, exit {process.returncode}; see {out / name}.log")
                    say(f"{name}: {ended}")
    except KeyboardInterrupt:
        # The trials got the same Ctrl-C: each saves a checkpoint; wait for them to.
        for process, log in running.values():
            process.wait()
            log.close()
        raise
    return statuses


def results(trials: list[Trial], out: Path) -> list[dict]:
    rows = []
    for trial in trials:
        best = trial_sidecar(out / trial.name, "best")
        last = trial_sidecar(out / trial.name, "last")
        rows.append({
            "trial": trial.name,
            **{k: parse_override(f"{k}={v}")[1] for k, v in trial.settings().items()},
            "best_val_accuracy": best.best_val_accuracy if best else None,
            "best_epoch": best.best_epoch if best else None,
            "epochs_run": last.epoch if last else None,
            "finished": last is not None and run_finished(last),
        })
    return rows


def write_results(rows: list[dict], out: Path) -> None:
    atomic_write_text(out / "results.json", json.dumps(rows, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())


def best_trial(rows: list[dict]) -> dict | None:
    scored = [r for r in rows if r["best_val_accuracy"] is not None and r["finished"]]
    return max(scored, key=lambda r: r["best_val_accuracy"]) if scored else None
