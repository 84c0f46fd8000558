"""Pictures of attribution maps: the digit in grey on white, each pixel tinted red where its
ink raised the class's logit and blue where it lowered it, as strongly as its share of the
image's largest attributions (a diverging colour map centred on zero). The draw page paints
its overlay the same way (serving/page.html, `overlay`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import atomic_write

RAISED, LOWERED = np.array([202, 0, 32]), np.array([5, 113, 176])  # ColorBrewer RdBu's ends
INK = 0.45  # how dark the digit's strokes are drawn under the colours
SCALE_PERCENTILE = 99  # of |map| over the image: a colour's full strength


def scale_of(attribution: np.ndarray) -> float:
    """The size of attribution drawn at full strength: the image's 99th percentile of |map|,
    so that one extreme pixel does not wash out the rest."""
    size = float(np.percentile(np.abs(attribution), SCALE_PERCENTILE))
    return size if size > 0 else float(np.abs(attribution).max()) or 1.0


def overlay(pixels: np.ndarray, attribution: np.ndarray) -> np.ndarray:
    """28 x 28 x 3 uint8: `pixels` (raw, 0-255) in grey with `attribution` tinted over it."""
    pixels = np.asarray(pixels, np.float64).reshape(attribution.shape)
    base = np.repeat((255 - INK * np.clip(pixels, 0, 255))[..., None], 3, axis=2)
    strength = np.clip(attribution / scale_of(attribution), -1, 1)[..., None]
    colour = np.where(strength > 0, RAISED, LOWERED)
    return np.rint(base + np.abs(strength) * (colour - base)).astype(np.uint8)


def write_heatmap(path: Path, pixels: np.ndarray, attribution: np.ndarray,
                  caption: str, zoom: int = 10) -> None:
    """A PNG of `overlay`, each pixel `zoom` screen pixels wide, under a line of `caption`."""
    from PIL import Image, ImageDraw

    side = attribution.shape[0] * zoom
    picture = Image.new("RGB", (side, side + 20), "white")
    picture.paste(Image.fromarray(overlay(pixels, attribution)).resize(
        (side, side), Image.NEAREST), (0, 20))
    ImageDraw.Draw(picture).text((4, 4), caption, fill="black")
    atomic_write(path, lambda temporary: picture.save(temporary, format="PNG"))
