"""Digits drawn from TrueType fonts and prepared as MNIST's were (LeCun et al.): the glyph's
bounding box scaled to fit 20 x 20 with anti-aliasing, then placed in 28 x 28 with its centre of
mass at the centre. Before that each is warped at random (rotation, shear, stretch, stroke
width, an elastic distortion), so that printed digits look more like written ones."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import ConfigError

CANVAS, POINTS = 80, 48  # the glyph's canvas and size in pixels, before the 20 x 20 box
BOX, SIDE = 20, 28
# What a fonts folder may cost to read: a folder of fonts holds far fewer entries and bytes.
MAX_ENTRIES, MAX_FONTS, MAX_FONT_BYTES = 100_000, 500, 32 << 20


def font_files(folder: str) -> list[Path]:
    """The .ttf files under `folder` that draw the ten digits, sorted; a ConfigError when there
    are none. A font that cannot be read, or draws the ten alike (it has no digits, so each is
    the same missing-glyph box), is left out."""
    root, candidates = Path(folder).expanduser(), []
    for seen, path in enumerate(root.rglob("*") if root.is_dir() else ()):
        if seen == MAX_ENTRIES or len(candidates) == MAX_FONTS:
            raise ConfigError(f"train.pretrain.fonts={folder} holds more than {MAX_ENTRIES:,} "
                              f"entries or {MAX_FONTS} fonts; point it at a folder of fonts")
        if path.suffix.lower() == ".ttf" and path.is_file() and (
                path.stat().st_size <= MAX_FONT_BYTES):
            candidates.append(path)
    found = [path for path in sorted(candidates) if draws_digits(path)]
    if not found:
        raise ConfigError(f"train.pretrain.fonts={folder} holds no .ttf font that draws the "
                          "digits; install some (Debian: fonts-dejavu-core) or point it at a "
                          "folder of them")
    return found


def draws_digits(path: Path) -> bool:
    from PIL import ImageFont

    try:
        face = ImageFont.truetype(str(path), POINTS)
        return len({bytes(face.getmask(str(digit))) for digit in range(10)}) == 10
    except (OSError, ValueError):
        return False


def fonts_digest(fonts: list[Path]) -> str:
    """One sha256 over the fonts' names and bytes: the rendered digits depend on both."""
    digest = hashlib.sha256()
    for font in fonts:
        digest.update(font.name.encode() + b"\0" + font.read_bytes())
    return digest.hexdigest()


def render_digits(count: int, seed: int, fonts: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """`count` uint8 images (count x 28 x 28, white on black) and their labels, each digit and
    font drawn at random from `seed`."""
    from PIL import ImageFont

    rng = np.random.default_rng(seed)
    faces = [ImageFont.truetype(str(font), POINTS) for font in fonts]
    images = np.zeros((count, SIDE, SIDE), np.uint8)
    labels = rng.integers(0, 10, count).astype(np.int32)
    for i, digit in enumerate(labels):
        while not mnist_style(glyph(faces[rng.integers(len(faces))], int(digit), rng),
                              images[i]):
            pass  # a warp left nothing visible: draw again
    return images, labels


def glyph(face, digit: int, rng: np.random.Generator) -> np.ndarray:
    """The digit drawn in `face` at the canvas' centre, warped at random, as floats 0-255."""
    from PIL import Image, ImageDraw, ImageFilter
    from scipy import ndimage

    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(canvas).text((CANVAS / 2, CANVAS / 2), str(digit), fill=255, font=face,
                                anchor="mm")
    angle, shear = np.deg2rad(rng.uniform(-12, 12)), rng.uniform(-0.35, 0.35)
    stretch = np.diag([rng.uniform(0.75, 1.25), rng.uniform(0.85, 1.15)])
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    inverse = np.linalg.inv(rotate @ np.array([[1, shear], [0, 1]]) @ stretch)
    centre = np.array([CANVAS / 2, CANVAS / 2])
    shift = centre - inverse @ centre
    canvas = canvas.transform(canvas.size, Image.AFFINE,
                              (*inverse[0], shift[0], *inverse[1], shift[1]), Image.BILINEAR)
    width = int(rng.integers(-1, 3))  # thinner, as drawn, or up to 2 pixels bolder
    if width:
        canvas = canvas.filter(ImageFilter.MaxFilter(2 * width + 1) if width > 0
                               else ImageFilter.MinFilter(3))
    pixels = np.asarray(canvas, np.float32)
    if rng.random() < 0.7:  # an elastic distortion (Simard et al. 2003)
        alpha = rng.uniform(10, 30)
        dy, dx = (ndimage.gaussian_filter(rng.uniform(-1, 1, pixels.shape), 4) * alpha
                  for _ in range(2))
        y, x = np.mgrid[:CANVAS, :CANVAS]
        pixels = ndimage.map_coordinates(pixels, [y + dy, x + dx], order=1)
    return pixels


def mnist_style(pixels: np.ndarray, out: np.ndarray) -> bool:
    """Write `pixels`' digit into `out` (28 x 28) as MNIST's were prepared; False when nothing
    is visible."""
    from PIL import Image
    from scipy import ndimage

    rows, cols = np.nonzero(pixels > 30)
    if rows.size == 0:
        return False
    crop = np.clip(pixels[rows.min():rows.max() + 1, cols.min():cols.max() + 1], 0, 255)
    scale = BOX / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize(size, Image.LANCZOS))
    cy, cx = ndimage.center_of_mass(small.astype(np.float32))
    top = min(max(round(SIDE / 2 - cy), 0), SIDE - small.shape[0])
    left = min(max(round(SIDE / 2 - cx), 0), SIDE - small.shape[1])
    out[:] = 0
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return True
