"""Inputs for prediction: image files, .npy arrays and IDX files, made to look like MNIST.

An MNIST digit is white on black, its ink fitted into a 20 x 20 box and centred by its centre
of mass in a 28 x 28 image. A photo or a drawing of any size is brought to that form: made
grey, inverted when the digit is dark on light, cropped to its ink, scaled and centred.
"""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import IMAGE_SIZE, PIXELS, parse_idx, read_file_bytes
from ..errors import DataError
from ..reading import check_regular, read_regular

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
ARRAY_SUFFIXES = (".npy",)
BOX = 20  # MNIST fits each digit's ink into 20 x 20 pixels
# The largest image read, from its header, before anything is decoded: a small file can claim
# billions of pixels. mnist-predict and mnist-serve share it.
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGE_SIDE = 1_000_000  # libpng's limit (PNG_USER_WIDTH_MAX, PNG_USER_HEIGHT_MAX)
# What a file handed to mnist-predict may weigh: a 4096 x 4096 RGBA image is 64 MiB raw; a
# sparse file of gigabytes would be read whole.
MAX_IMAGE_BYTES = MAX_ARRAY_BYTES = 64 << 20
# A progressive JPEG decodes the whole image once per scan: encoders write up to about 20;
# 30,000 empty ones cost a minute of decoding for a 300 kB file.
MAX_JPEG_SCANS = 100
INK = 0.2  # of the image's range: what counts as ink when cropping
# Less contrast than this many grey levels is an empty sheet (a transparent PNG, a blank
# canvas): stretched to the full range, its noise would be classified with confidence.
BLANK_RANGE = 8.0


@dataclass
class Input:
    """One image to classify: where it came from, and 784 pixels, 0-255, white on black."""

    path: str
    index: int | None  # the position inside a file that holds several images
    pixels: np.ndarray  # float32, 784


def load_inputs(path: Path) -> list[Input]:
    """Every image in `path`: an image file, a .npy array of one or more 28 x 28 images
    (0-255, or 0-1 floats), or an IDX file of images. Raises DataError for what it cannot read.
    """
    suffix = path.suffix.lower()
    if path.is_dir():
        raise DataError(f"{path} is a directory; pass its files (folders are expanded by "
                        "mnist-predict)")
    check_regular(path, DataError)
    if suffix in IMAGE_SUFFIXES:
        return [Input(str(path), None, mnist_like(read_image(path), str(path)).reshape(-1))]
    if suffix in ARRAY_SUFFIXES:
        return from_stack(path, read_npy(path))
    _, content = read_file_bytes(path)
    if content[:4] in (b"\x00\x00\x08\x03",):  # IDX, unsigned bytes, 3 dimensions: images
        return from_stack(path, parse_idx(content, str(path)))
    raise DataError(f"{path} is not an image (png, jpg, bmp), a .npy array or an IDX image "
                    "file")


def expand(paths: list[Path]) -> list[Path]:
    """Folders become the image, .npy and IDX files directly inside them, in name order."""
    out = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.is_file()
                              and not p.name.startswith(".")))
        else:
            out.append(path)
    return out


def read_image(path: Path) -> np.ndarray:
    """A greyscale float32 image from a PNG/JPEG/BMP file."""
    return decode_image(read_regular(path, MAX_IMAGE_BYTES, DataError, "image"), str(path),
                        MAX_IMAGE_PIXELS)


def decode_image(raw: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
    """A greyscale float32 image from the bytes of a PNG/JPEG/BMP file. With `max_pixels`,
    a larger image is refused from its header, before anything is decoded."""
    import PIL.Image  # imported here: every command's start-up imports this module

    kind = image_kind(raw)
    if kind is None:
        raise DataError(f"{name} is not a PNG, JPEG or BMP image")
    # OpenCV decodes a cut-short or damaged file into black pixels, without an error.
    if (damage := damage_in(raw, kind)) is not None:
        raise DataError(f"{name} is damaged: {damage}; send the whole, original file")
    size = image_size(raw, kind)
    # libpng refuses a side over a million pixels.
    if size is not None and max(size) > MAX_IMAGE_SIDE:
        raise DataError(f"{name} is {size[0]} x {size[1]} pixels; a side over "
                        f"{MAX_IMAGE_SIDE:,} pixels cannot be decoded")
    if max_pixels is not None:
        if size is None:
            raise DataError(f"{name} has no readable {kind} header")
        check_pixel_count(name, size, max_pixels)
    if kind == "JPEG" and (scans := raw.count(b"\xff\xda")) > MAX_JPEG_SCANS:
        # In a JPEG's coded data every 0xFF is followed by 0 or a restart marker: each
        # FF DA is a scan's start.
        raise DataError(f"{name} is a JPEG of {scans:,} scans, more than the "
                        f"{MAX_JPEG_SCANS} an encoder writes; send it saved again")
    try:
        with PIL.Image.open(io.BytesIO(raw)) as image:
            if max_pixels is not None:  # Pillow's size, which it decodes by, checked too
                check_pixel_count(name, image.size, max_pixels)
            image.load()
            grey = grey_pixels(image)
    except (OSError, ValueError, PIL.Image.DecompressionBombError):
        raise DataError(f"{name} could not be decoded as an image") from None
    if grey.size == 0:
        raise DataError(f"{name} could not be decoded as an image")
    return grey


def check_pixel_count(name: str, size: tuple[int, int], max_pixels: int) -> None:
    if size[0] * size[1] > max_pixels:
        raise DataError(f"{name} is {size[0]} x {size[1]} pixels, more than the "
                        f"{max_pixels:,} allowed; send a smaller image")


def grey_pixels(image) -> np.ndarray:
    """A decoded image as float32 grey levels, 0-255. A transparent background is filled in
    with white under dark ink and with black under light ink, as the drawing was seen."""
    if image.mode.startswith("I"):  # 16- or 32-bit grey: scaled to 8 bits
        values = np.asarray(image, np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() <= 65535 else values.max()
        return (values * (255.0 / top)).astype(np.float32)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        grey, alpha = np.moveaxis(np.asarray(image.convert("RGBA").convert("LA"),
                                             np.float32), -1, 0)
        alpha /= 255.0
        opaque = alpha > 0.5
        ink_is_dark = opaque.any() and float(np.median(grey[opaque])) < 128
        background = 255.0 if ink_is_dark else 0.0
        return grey * alpha + background * (1.0 - alpha)
    return np.asarray(image.convert("L"), np.float32)


def image_kind(raw: bytes) -> str | None:
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if raw[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if raw[:2] == b"BM":
        return "BMP"
    return None


def damage_in(raw: bytes, kind: str) -> str | None:
    """What is wrong with an image file's structure, or None."""
    if kind == "PNG":
        at = 8
        while at + 12 <= len(raw):
            length = int.from_bytes(raw[at : at + 4], "big")
            chunk = raw[at + 4 : at + 8 + length]
            if at + 12 + length > len(raw):
                break
            if zlib.crc32(chunk) != int.from_bytes(raw[at + 8 + length : at + 12 + length],
                                                   "big"):
                return f"its {chunk[:4].decode('latin-1')!r} chunk fails its checksum"
            if chunk[:4] == b"IEND":
                return None
            if chunk[:4] == b"IHDR" and at != 8:
                return "it has a second IHDR chunk (the PNG standard allows one, first)"
            at += 12 + length
        return "its PNG data ends early"
    if kind == "JPEG":
        return None if b"\xff\xd9" in raw[-32:] else "its JPEG data ends early"
    return None if len(raw) >= int.from_bytes(raw[2:6], "little") else (
        "its BMP data ends early")


def image_size(raw: bytes, kind: str) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG or BMP file."""
    if kind == "PNG":
        return (int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
                ) if raw[12:16] == b"IHDR" else None
    if kind == "BMP":
        return (abs(int.from_bytes(raw[18:22], "little", signed=True)),
                abs(int.from_bytes(raw[22:26], "little", signed=True))
                ) if len(raw) >= 26 else None
    at = 2
    while at + 9 <= len(raw) and raw[at] == 0xFF:
        marker, length = raw[at + 1], int.from_bytes(raw[at + 2 : at + 4], "big")
        # SOF0-SOF15 hold the frame's size; C4 (DHT), C8 and CC (DAC) are other segments.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (int.from_bytes(raw[at + 7 : at + 9], "big"),
                    int.from_bytes(raw[at + 5 : at + 7], "big"))
        at += 2 + length
    return None


def read_npy(path: Path) -> np.ndarray:
    """A .npy array, read only once its header says it is not larger than MAX_ARRAY_BYTES
    (and the file holds no more than that)."""
    raw = read_regular(path, MAX_ARRAY_BYTES + 4096, DataError, "array")
    try:
        handle = io.BytesIO(raw)
        header = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}.get(
                      np.lib.format.read_magic(handle))
        if header is None:
            raise ValueError("a .npy format version other than 1.0 and 2.0")
        shape, _, dtype = header(handle)
        size = math.prod(shape) * dtype.itemsize
        if size > MAX_ARRAY_BYTES:
            raise DataError(f"{path} declares an array of shape {shape} ({size:,} bytes), "
                            f"more than the {MAX_ARRAY_BYTES:,} an input may have")
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, TypeError) as error:
        raise DataError(f"{path} is not a readable .npy file ({error})") from None
    return pixel_values(array, path)


def pixel_values(array: np.ndarray, name: str | Path) -> np.ndarray:
    """An array of pixel values as float32, 0-255."""
    if not np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_:
        raise DataError(f"{name} holds {array.dtype} values, not pixel values")
    array = array.astype(np.float32)
    if array.size and np.nanmax(array) <= 1.0:
        array = array * 255.0  # 0-1 floats, as ToTensor gives
    return array


def inputs_of(images: Any, blank_ok: bool = False) -> list[Input]:
    """What `Classifier.predict` takes, as inputs: a numpy array of one or more images, a PIL
    image, a path (a folder is its files), or a list of these. A blank array is refused unless
    `blank_ok` (logits and explanations, whose baseline is the blank image)."""
    import PIL.Image

    if isinstance(images, (str, Path)):
        return [item for path in expand([Path(images)]) for item in load_inputs(path)]
    if isinstance(images, PIL.Image.Image):
        return [Input("image", None, mnist_like(grey_pixels(images), "the image").reshape(-1))]
    if isinstance(images, (list, tuple)) and not all(
            isinstance(item, (int, float, list, tuple)) for item in images):
        return [item for part in images for item in inputs_of(part, blank_ok)]
    if isinstance(images, (np.ndarray, list, tuple)):
        return from_stack("the array", pixel_values(np.asarray(images), "the array"), blank_ok)
    raise DataError(f"cannot classify a {type(images).__name__}; pass a numpy array, a PIL "
                    "image, a path, or a list of these")


def from_stack(path: str | Path, array: np.ndarray, blank_ok: bool = False) -> list[Input]:
    """Images from an array shaped 28x28, Nx28x28, 784 or Nx784."""
    if array.shape in ((IMAGE_SIZE, IMAGE_SIZE), (PIXELS,)):
        return [Input(str(path), None, check_pixels(path, array.reshape(-1), blank_ok))]
    if array.ndim == 3 and array.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE) or (
            array.ndim == 2 and array.shape[1] == PIXELS):
        flat = array.reshape(len(array), PIXELS)
        return [Input(str(path), i, check_pixels(f"{path}[{i}]", row, blank_ok))
                for i, row in enumerate(flat)]
    raise DataError(f"{path} holds an array of shape {array.shape}; expected 28x28, Nx28x28, "
                    "784 or Nx784 pixels")


def check_pixels(path: str | Path, pixels: np.ndarray, blank_ok: bool = False) -> np.ndarray:
    pixels = pixels.astype(np.float32)
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path} has pixel values outside 0-255")
    if not blank_ok and (blank := nothing_drawn(pixels.reshape(1, -1))[0]) is not None:
        raise DataError(f"{path} {blank}")
    return pixels


def nothing_drawn(images: np.ndarray) -> list[str | None]:
    """For each row of `images` (N x pixels, 0-255): why it is blank ("has nothing drawn on
    it ..."), or None for an image with a digit's contrast. A blank image is refused alike
    from every input, not classified."""
    spans = np.ptp(images, axis=1) if images.size else np.zeros(len(images))
    return [None if span >= BLANK_RANGE else
            f"has nothing drawn on it (its grey levels span {span:.0f} of 255); send an image "
            "of a digit" for span in spans.tolist()]


def mnist_like(image: np.ndarray, name: str) -> np.ndarray:
    """A greyscale image of any size -> 28 x 28 float32, white digit on black, centred. An
    image with nothing drawn on it (`name` says which) is a DataError, not a guess."""
    image = image.astype(np.float32)
    if border_is_light(image):
        image = 255.0 - image  # people draw dark digits on light paper
    low, high = float(image.min()), float(image.max())
    if (blank := nothing_drawn(np.array([[low, high]]))[0]) is not None:
        raise DataError(f"{name} {blank}")
    image = (image - low) * (255.0 / (high - low))
    if image.shape == (IMAGE_SIZE, IMAGE_SIZE):
        return image  # already MNIST's size: taken as it is
    rows = np.flatnonzero((image > INK * 255).any(axis=1))
    cols = np.flatnonzero((image > INK * 255).any(axis=0))
    ink = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = BOX / max(ink.shape)
    height = max(1, round(ink.shape[0] * scale))
    width = max(1, round(ink.shape[1] * scale))
    small = resize(ink, width, height)
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    top, left = (IMAGE_SIZE - height) // 2, (IMAGE_SIZE - width) // 2
    canvas[top : top + height, left : left + width] = small
    return centre_of_mass_shift(canvas)


def border_is_light(image: np.ndarray) -> bool:
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return float(np.median(border)) > (float(image.min()) + float(image.max())) / 2


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Shrinking averages each output pixel's area, as MNIST's own anti-aliased digits were
    made; enlarging interpolates."""
    import PIL.Image

    shrinking = width * height < image.shape[0] * image.shape[1]
    method = PIL.Image.Resampling.BOX if shrinking else PIL.Image.Resampling.BILINEAR
    resized = PIL.Image.fromarray(image.astype(np.float32)).resize((width, height), method)
    return np.asarray(resized, np.float32).clip(0, 255)


def centre_of_mass_shift(canvas: np.ndarray) -> np.ndarray:
    total = canvas.sum()
    if total <= 0:
        return canvas
    ys, xs = np.indices(canvas.shape)
    # MNIST puts the centre of mass at (14, 14), zero-based: half a pixel off the middle.
    dy = int(round(IMAGE_SIZE / 2 - (ys * canvas).sum() / total))
    dx = int(round(IMAGE_SIZE / 2 - (xs * canvas).sum() / total))
    shifted = np.zeros_like(canvas)
    src = canvas[max(0, -dy) : IMAGE_SIZE - max(0, dy), max(0, -dx) : IMAGE_SIZE - max(0, dx)]
    shifted[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return shifted
