"""curves.png: a run's loss and accuracy by epoch, training and validation, drawn with Pillow
(a dependency of the package) at the end of every run. matplotlib drew it before; importing
and setting it up took 0.3 s of each run's 1.5 s of fixed cost, for two panels of lines."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..files import atomic_write

WIDTH, HEIGHT = 1000, 400  # pixels of the saved picture
SCALE = 2  # drawn at twice the size, then reduced: smooth lines and text
SERIES = (("train", "training", (31, 119, 180)), ("val", "validation", (255, 127, 14)))
MARKERS_UP_TO = 60  # epochs; beyond that the points would hide the lines
INK, GRID = (40, 40, 40), (228, 228, 228)


def plot_curves(rows: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch (metrics.jsonl's rows), training and validation, side by
    side: 1000 x 400 pixels. Nothing is drawn without a row."""
    if not rows:
        return
    image = Image.new("RGB", (WIDTH * SCALE, HEIGHT * SCALE), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13 * SCALE)
    half = WIDTH * SCALE // 2
    for left, key in ((0, "loss"), (half, "accuracy")):
        panel(draw, font, (left, 0, left + half, HEIGHT * SCALE), rows, key)
    picture = image.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)
    atomic_write(path, lambda temporary: picture.save(temporary, format="PNG"))


def panel(draw: ImageDraw.ImageDraw, font, box: tuple[int, int, int, int], rows: list[dict],
          key: str) -> None:
    """One panel: axes with ticks and a grid, a line per series that has values, a legend."""
    s = SCALE
    left, top, right, bottom = box[0] + 62 * s, box[1] + 34 * s, box[2] - 18 * s, box[3] - 46 * s
    epochs = [row["epoch"] for row in rows]
    series = []
    for prefix, label, colour in SERIES:
        points = [(row["epoch"], row.get(f"{prefix}_{key}")) for row in rows]
        points = [(e, v) for e, v in points if v is not None and math.isfinite(v)]
        if points:  # a refit has no validation; a diverged epoch's loss is not drawn
            series.append((label, colour, points))
    values = [v for _, _, points in series for _, v in points] or [0.0]
    y_ticks = nice_ticks(min(values), max(values), 6)
    x_ticks = [t for t in nice_ticks(min(epochs), max(epochs), 10, whole=True)
               if min(epochs) <= t <= max(epochs)] or [epochs[0]]
    x_low, x_high = min(epochs) - 0.5, max(epochs) + 0.5
    y_low, y_high = y_ticks[0], y_ticks[-1]

    def at(epoch: float, value: float) -> tuple[float, float]:
        return (left + (epoch - x_low) / (x_high - x_low) * (right - left),
                bottom - (value - y_low) / (y_high - y_low) * (bottom - top))

    for tick in y_ticks:
        y = at(x_low, tick)[1]
        draw.line([(left, y), (right, y)], fill=GRID, width=s)
        draw.text((left - 6 * s, y), tick_label(tick, y_ticks), fill=INK, font=font, anchor="rm")
    for tick in x_ticks:
        x = at(tick, y_low)[0]
        draw.line([(x, top), (x, bottom)], fill=GRID, width=s)
        draw.text((x, bottom + 6 * s), str(int(tick)), fill=INK, font=font, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline=INK, width=s)
    draw.text(((left + right) / 2, bottom + 26 * s), "epoch", fill=INK, font=font, anchor="mt")
    draw.text(((left + right) / 2, top - 10 * s), key, fill=INK, font=font, anchor="mb")
    for _, colour, points in series:
        xy = [at(e, v) for e, v in points]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2 * s, joint="curve")
        if len(xy) <= MARKERS_UP_TO:
            for x, y in xy:
                draw.ellipse([x - 4 * s, y - 4 * s, x + 4 * s, y + 4 * s], fill=colour)
    legend(draw, font, (right, bottom if key == "accuracy" else top), series,
           upward=key == "accuracy")


def legend(draw, font, corner: tuple[float, float], series, upward: bool) -> None:
    """The series' names, in the panel's corner the curves leave free: loss falls and
    accuracy rises, so the upper right for one and the lower right for the other."""
    s = SCALE
    line, width = 20 * s, 110 * s
    right, edge = corner
    top = edge - (len(series) * line + 8 * s) - 8 * s if upward else edge + 8 * s
    draw.rectangle([right - 8 * s - width, top, right - 8 * s, top + len(series) * line + 8 * s],
                   fill="white", outline=GRID, width=s)
    for i, (label, colour, _) in enumerate(series):
        y = top + 4 * s + i * line + line / 2
        x = right - width
        draw.line([(x, y), (x + 22 * s, y)], fill=colour, width=2 * s)
        draw.text((x + 30 * s, y), label, fill=INK, font=font, anchor="lm")


def nice_ticks(low: float, high: float, most: int, whole: bool = False) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) from at or below `low` to at
    or above `high`, at most `most` + 1 of them; steps of at least 1 if `whole`."""
    if high - low < 1e-12:
        low, high = low - max(abs(low) * 0.01, 0.01), high + max(abs(high) * 0.01, 0.01)
    raw = (high - low) / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if whole:
        step = max(1, round(step))
    first, last = math.floor(low / step), math.ceil(high / step)
    return [i * step for i in range(first, last + 1)]


def tick_label(value: float, ticks: list[float]) -> str:
    """`value` with the decimals the ticks' step needs (0.05 apart: two)."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = next((d for d in range(7) if abs(round(step, d) - step) < 1e-9 * step), 6)
    return f"{value:.{decimals}f}"
