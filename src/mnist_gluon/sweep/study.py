"""Hyperparameter searches on Optuna: every trial a normal `mnist-train` run folder, chosen on
validation accuracy only (the test set is never looked at).

A sweep folder holds `sweep.json` (the search space and settings), `study.db` (the Optuna
study, unless `--storage` names another database), a `trial-NNN/` run folder and
`trial-NNN.log` for each trial this folder ran, and the results: `results.csv`,
`results.json` and `best.yaml`, the config of the best finished trial.

Several sweep processes, on one machine or several, that name the same storage and study
share one search: each asks the study for its own trials, so none runs a trial twice. Each
run reports its validation accuracy every epoch from inside `mnist-train` (`TrialJudge`), and
the study's pruner may stop it there. A trial whose run fails is marked failed and the search
goes on. A trial whose sweep was stopped or killed stays running in the study; the same sweep
command run again in the same folder resumes it from its last checkpoint.
"""

from __future__ import annotations

import csv
import ctypes
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import load_config
from ..errors import ConfigError, Interrupted, Stopped
from ..files import atomic_write_text
from ..training.run_folder import lock_run_dir
from ..training.trial import ENV_PRUNER, ENV_STORAGE, ENV_STUDY, ENV_TRIAL, make_pruner
from .search import Search, prepare

INTERRUPTED = (130, 143, -signal.SIGINT, -signal.SIGTERM)  # a trial stopped with a checkpoint
DISCARDED = "discarded"  # a trial's attribute: why it repeated another and never ran
MAX_ASKS = 20


def kept(trials: list) -> list:
    """The trials that are not discarded repeats."""
    return [t for t in trials if DISCARDED not in t.user_attrs]


def open_study(search: Search, storage: str, name: str):
    import optuna

    from .samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from sqlalchemy.exc import SQLAlchemyError

    epochs = load_config(search.config, list(search.base)).train.epochs
    for attempt in range(4):
        try:
            return optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                       sampler=make_sampler(search),
                                       pruner=make_pruner(search.pruner, epochs),
                                       load_if_exists=True)
        except SQLAlchemyError as error:
            # Sweeps started together on a new database race to create Optuna's tables:
            # the loser finds them made a moment later.
            failure = error
            time.sleep(0.5 * (attempt + 1))
        except (ImportError, ValueError, optuna.exceptions.OptunaError) as error:
            failure = error
            break
    url, secrets = redacted(storage)
    why = str(failure).splitlines()[0]
    for secret in secrets:
        why = why.replace(secret, "***")
    raise ConfigError(f"the study {name!r} cannot be opened in {url} ({why})")


def redacted(storage: str) -> tuple[str, list[str]]:
    """The storage URL without its passwords (the one in `user:password@` and any query
    parameter named password: a libpq URL may carry it there), and the passwords, to take out
    of a message. PGPASSWORD or ~/.pgpass keep a password out of the URL, and out of ps."""
    import urllib.parse

    parts = urllib.parse.urlsplit(storage)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    hidden = [key.lower() in ("password", "passwd", "pwd", "pass") for key, _ in query]
    secrets = [value for (_, value), hide in zip(query, hidden, strict=True) if hide and value]
    secrets += [parts.password] if parts.password else []
    if not secrets:
        return storage, []
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username}:***@{netloc.rpartition('@')[2]}"
    shown_query = "&".join(f"{key}={'***' if hide else value}"
                           for (key, value), hide in zip(query, hidden, strict=True))
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=shown_query)), secrets


def trial_name(number: int) -> str:
    return f"trial-{number:03d}"


class Terminated(Exception):
    """SIGTERM reached the sweep (see `terminate_on_sigterm`)."""


def terminate_on_sigterm() -> None:
    def handler(signum, frame):
        raise Terminated

    signal.signal(signal.SIGTERM, handler)


class Sweep:
    """Runs trials of `study` as mnist-train processes in `out`, `jobs` at a time."""

    def __init__(self, study, search: Search, out: Path, storage: str, say):
        self.study, self.search, self.out, self.storage, self.say = (
            study, search, out.resolve(), storage, say)
        self.distributions = {a.key: a.distribution() for a in search.axes}
        self.running: dict[int, tuple[subprocess.Popen, object]] = {}
        self.statuses: dict[str, int] = {}
        self.exhausted = False

    def mine(self, states=None) -> list:
        """The study's trials whose run folder is in this sweep folder."""
        return [t for t in self.study.get_trials(deepcopy=False, states=states)
                if Path(t.user_attrs.get("run_dir", "/")).parent == self.out]

    def run(self, trials: int | None, jobs: int) -> dict[str, int]:
        """Resume this folder's interrupted trials, then run new ones until this folder holds
        `trials` of them (or the grid is exhausted)."""
        from optuna.trial import TrialState

        pending = sorted(self.mine((TrialState.RUNNING,)), key=lambda t: t.number)
        for frozen in self.mine((TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
            self.say(f"{trial_name(frozen.number)}: {frozen.state.name.lower()} earlier, "
                     "skipped")
        try:
            while pending or self.running or self.wants_more(trials):
                while len(self.running) < jobs and (pending or self.wants_more(trials)):
                    self.start(pending.pop(0) if pending else None)
                time.sleep(0.2)
                self.reap()
        except (KeyboardInterrupt, Terminated) as stop:
            # A Ctrl-C reached the trials too; a SIGTERM reached only this process, so it is
            # passed on. Each trial saves a checkpoint; wait for them to.
            for process, log in self.running.values():
                if isinstance(stop, Terminated):
                    process.send_signal(signal.SIGTERM)
                process.wait()
                log.close()
            raise
        return self.statuses

    def wants_more(self, trials: int | None) -> bool:
        if self.exhausted or self.search.sampler == "grid" and len(
                kept(self.study.get_trials(deepcopy=False))) >= self.search.grid_size():
            return False  # every grid point has been given to a trial, here or elsewhere
        return trials is None or len(self.mine()) < trials

    def start(self, resumed) -> None:
        asked = (resumed.number, resumed._trial_id, resumed.params) if resumed else self.ask()
        if asked is None:
            return
        number, trial_id, params = asked
        run_dir = self.out / trial_name(number)
        overrides = [*self.search.base, *(f"{k}={v}" for k, v in params.items())]
        train = [str(Path(sys.executable).parent / "mnist-train"), "--quiet"]
        if (run_dir / "last.params").exists():
            command = [*train, "--resume", str(run_dir)]
        else:  # --force: a run killed before its first checkpoint left only its config
            command = [*train, "--config", str(self.search.config), "--out", str(run_dir),
                       "--force", *(arg for o in overrides for arg in ("--set", o))]
        env = {**os.environ, ENV_STORAGE: self.storage,
               ENV_STUDY: self.study.study_name, ENV_TRIAL: str(trial_id),
               ENV_PRUNER: self.search.pruner}
        log = os.fdopen(os.open(self.out / f"{trial_name(number)}.log",  # closed in reap
                                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644), "a")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   preexec_fn=stopped_with_parent)
        self.running[number] = (process, log)
        settings = " ".join(f"{k}={v}" for k, v in params.items())
        self.say(f"{trial_name(number)}: {'resumed' if resumed else 'started'}  {settings}")

    def ask(self) -> tuple[int, int, dict] | None:
        """A new trial of the study whose point no other trial has: a repeat (another process
        proposed the same point first, or the grid is given out) is discarded, marked failed,
        and another point asked for; None when no new point comes in MAX_ASKS asks."""
        from optuna.trial import TrialState

        for _ in range(MAX_ASKS):
            trial = self.study.ask(self.distributions)
            grid_done = self.search.sampler == "grid" and trial.number >= self.search.grid_size()
            earlier = [t for t in self.study.get_trials(deepcopy=False)
                       if t.number < trial.number and t.params == trial.params
                       and DISCARDED not in t.user_attrs]
            if not grid_done and not earlier:
                trial.set_user_attr("run_dir", str(self.out / trial_name(trial.number)))
                trial.set_user_attr("host", socket.gethostname())
                return trial.number, trial._trial_id, trial.params
            trial.set_user_attr(DISCARDED, "the grid is given out" if grid_done else
                                f"the point of {trial_name(earlier[0].number)}")
            self.study.tell(trial.number, state=TrialState.FAIL)
        self.exhausted = True
        self.say(f"no new point in {MAX_ASKS} asks: the search space is given out")
        return None

    def reap(self) -> None:
        for number, (process, log) in list(self.running.items()):
            code = process.poll()
            if code is None:
                continue
            log.close()
            del self.running[number]
            self.statuses[trial_name(number)] = code
            self.say(f"{trial_name(number)}: {self.tell(number, code)}")

    def tell(self, number: int, code: int) -> str:
        """Record the ended run in the study; what became of it, in words."""
        from optuna.trial import TrialState

        run_dir = self.out / trial_name(number)
        if code in INTERRUPTED:
            return "stopped; run the same command again to resume it"
        if code != 0:
            self.study.tell(number, state=TrialState.FAIL)
            return f"failed, exit {code}; see {run_dir}.log"
        import optuna

        record = run_record(run_dir)
        frozen = self.study.trials[number]
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        for key, value in record.items():
            trial.set_user_attr(key, value)
        if "pruned_at_epoch" in frozen.user_attrs:
            self.study.tell(number, state=TrialState.PRUNED)
            return f"pruned at epoch {frozen.user_attrs['pruned_at_epoch']}"
        self.study.tell(number, record["best_val_accuracy"])
        return f"done, best validation accuracy {record['best_val_accuracy']:.4f}"


@dataclass
class SweepResult:
    rows: list[dict]  # one per trial, as results.csv holds them
    best: tuple[str, float, str] | None  # the best finished trial: name, accuracy, config
    failed: bool  # some trial this process ran failed


def run_sweep(search: Search, out: Path, storage: str | None, study_name: str | None,
              trials: int | None, jobs: int, say) -> SweepResult:
    """Run `search` in the folder `out` (which holds this search or nothing) on the study
    `study_name` in `storage` (by default sqlite in `out`, named after it): `trials` in all
    (the whole grid if None), `jobs` at once. Writes results.csv, results.json and best.yaml."""
    prepare(out, search)
    lock = lock_run_dir(out, "mnist-sweep")  # one sweep process per folder; others share a study
    try:
        return sweep_in(search, out, storage, study_name, trials, jobs, say)
    finally:
        if lock is not None:
            os.close(lock)


def sweep_in(search: Search, out: Path, storage: str | None, study_name: str | None,
             trials: int | None, jobs: int, say) -> SweepResult:
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    study = open_study(search, storage, study_name or out.resolve().name)
    continuing = "the trials saved checkpoints: run the same command again to continue"
    terminate_on_sigterm()
    try:
        statuses = Sweep(study, search, out, storage, say).run(trials, jobs)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; {continuing}") from None
    except Terminated:
        raise Stopped(f"stopped by SIGTERM; {continuing}", signal.SIGTERM) from None
    rows = results(study, search)
    if rows:
        write_results(rows, out)
    best = best_trial(study)
    if best is not None:
        atomic_write_text(out / "best.yaml", best[2])
    return SweepResult(rows, best, any(code != 0 for code in statuses.values()))


def stopped_with_parent() -> None:
    """In a trial's process: get SIGTERM (checkpoint, then exit) if the sweep dies, even by
    SIGKILL, so no trial trains on unwatched. Linux only; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_record(run_dir: Path) -> dict:
    """What the study keeps of a finished run: its best validation accuracy and epoch, how
    many epochs it trained, and its resolved config (for best.yaml)."""
    from ..checkpoint import read_sidecar

    best, last = read_sidecar(run_dir / "best.params"), read_sidecar(run_dir / "last.params")
    return {"best_val_accuracy": best.best_val_accuracy, "best_epoch": best.best_epoch,
            "epochs_run": last.epoch, "config": (run_dir / "config.yaml").read_text()}


def results(study, search: Search) -> list[dict]:
    """A row per trial of the study, wherever it ran, in trial order."""
    rows = []
    for trial in sorted(kept(study.get_trials(deepcopy=False)), key=lambda t: t.number):
        attrs = trial.user_attrs
        rows.append({
            "trial": trial_name(trial.number),
            **{a.key: trial.params.get(a.key) for a in search.axes},
            "best_val_accuracy": attrs.get("best_val_accuracy"),
            "best_epoch": attrs.get("best_epoch"),
            "epochs_run": attrs.get("epochs_run"),
            "finished": trial.state.name in ("COMPLETE", "PRUNED"),
            "state": trial.state.name.lower(),
        })
    return rows


def write_results(rows: list[dict], out: Path) -> None:
    atomic_write_text(out / "results.json", json.dumps(rows, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())


def best_trial(study) -> tuple[str, float, str] | None:
    """(name, validation accuracy, resolved config) of the best trial that ran to its end;
    pruned trials stopped early and are not chosen."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "config" in t.user_attrs]
    if not done:
        return None
    best = max(done, key=lambda t: t.value)
    return trial_name(best.number), best.value, best.user_attrs["config"]
