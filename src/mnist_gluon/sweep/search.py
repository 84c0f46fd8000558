"""What a sweep searches: its axes (`--grid`, `--range`), the config and overrides every trial
starts from, and `sweep.json`, which holds a sweep folder to one search."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import load_config, parse_override
from ..errors import ConfigError, OutputError
from ..files import atomic_write_text, check_path_names
from ..reading import read_regular

PLAN = "sweep.json"
MAX_PLAN_BYTES = 1 << 20  # a plan is a few hundred bytes
SAMPLERS = ("grid", "random", "tpe")


@dataclass(frozen=True)
class Axis:
    """One searched key: the values of a grid, or a range (low, high; log-scaled or not)."""

    key: str
    values: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    def distribution(self):
        import optuna.distributions as d

        if self.values is not None:
            return d.CategoricalDistribution(self.values)
        if isinstance(self.low, int) and isinstance(self.high, int):
            return d.IntDistribution(self.low, self.high, log=self.log)
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log)


def parse_grid(items: list[str]) -> list[Axis]:
    """`train.lr=0.001,0.002` -> the axis train.lr with those two values, read as YAML."""
    axes = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--grid {item!r} is not KEY=V1,V2,...; write e.g. "
                              "--grid train.lr=0.001,0.002")
        parsed = tuple(parse_override(f"x={v.strip()}")[1] for v in values.split(","))
        axes.append(Axis(key.strip(), values=parsed))
    return axes


def parse_ranges(items: list[str]) -> list[Axis]:
    """`train.lr=0.01:0.5:log` -> a log-scaled range; integers at both ends give integers."""
    axes = []
    for item in items:
        key, sep, text = item.partition("=")
        parts = text.split(":")
        how = "write e.g. --range train.lr=0.01:0.5:log or --range model.hidden=64:256"
        if not sep or not key.strip() or len(parts) not in (2, 3) or (
                len(parts) == 3 and parts[2] != "log"):
            raise ConfigError(f"--range {item!r} is not KEY=LOW:HIGH[:log]; {how}")
        low, high = (parse_override(f"x={p}")[1] for p in parts[:2])
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise ConfigError(f"--range {item!r}: LOW and HIGH must be numbers; {how}")
        if not low < high or (len(parts) == 3 and low <= 0):
            raise ConfigError(f"--range {item!r}: LOW must be below HIGH (and above 0 for log)")
        axes.append(Axis(key.strip(), low=low, high=high, log=len(parts) == 3))
    return axes


@dataclass(frozen=True)
class Search:
    """What a sweep searches: the config every trial starts from, the overrides every trial
    takes, the axes, and how the study samples and prunes."""

    config: Path
    base: tuple[str, ...]
    axes: tuple[Axis, ...]
    sampler: str
    pruner: str
    seed: int

    def check_points(self) -> list[list[str]]:
        """Overrides that give every grid value and both ends of every range at least once,
        each beside the other axes all at their low and all at their high end: 2 per value,
        not the 2^N corners of N ranges, which a few more keys would make millions."""
        ends = [list(a.values) if a.values is not None else [a.low, a.high] for a in self.axes]
        points = []
        for i, values in enumerate(ends):
            for value in values:
                for side in (0, -1):
                    point = [e[side] for e in ends]
                    point[i] = value
                    if point not in points:
                        points.append(point)
        return [[f"{a.key}={v}" for a, v in zip(self.axes, point, strict=True)]
                for point in points]

    def grid_size(self) -> int:
        """How many points a grid search has."""
        return math.prod(len(a.values) for a in self.axes if a.values is not None)

    def plan(self) -> dict:
        return {"config": str(self.config), "set": list(self.base),
                "axes": [asdict(a) | {"values": list(a.values) if a.values else None}
                         for a in self.axes],
                "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed}


def check_search(search: Search) -> None:
    keys = [a.key for a in search.axes]
    if not keys:
        raise ConfigError("give at least one --grid or --range to search")
    if len(set(keys)) != len(keys):
        raise ConfigError("a key is searched twice; give all its values in one --grid or "
                          "--range")
    if search.sampler == "grid" and any(a.values is None for a in search.axes):
        raise ConfigError("--sampler grid takes --grid values only; use --sampler tpe or "
                          "random with --range")
    for overrides in search.check_points():  # every value a trial may get must make a config
        load_config(search.config, [*search.base, *overrides])


def prepare(out: Path, search: Search) -> None:
    """Check the search, and that `out` holds this sweep or nothing."""
    check_search(search)
    check_path_names(out, "sweep folder")
    plan = search.plan()
    existing = out / PLAN
    if existing.exists():
        try:
            recorded = json.loads(read_regular(existing, MAX_PLAN_BYTES, OutputError,
                                               "sweep plan"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise OutputError(f"{existing} is damaged ({error}); restore it to continue the "
                              "sweep, or pass --out DIR for a new one") from None
        if recorded != plan:
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
