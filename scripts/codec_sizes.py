"""How large a compressed model's body is under each well-kept codec: the measurement behind
mnist_gluon.compression.mnc's choice of LZMA2 (docs/compression.md).

    python scripts/codec_sizes.py runs/pruned/export/model.mnc [...]

Each body (the description, the codebooks, a byte per weight, the biases) is compressed whole
by lzma (raw LZMA2 as the file stores it, its defaults, and the .xz container) and, when the
`zstandard` package is importable (pip install zstandard), by Zstandard at levels 19 and 22.
"""

from __future__ import annotations

import lzma
import sys
from pathlib import Path

from mnist_gluon.compression.mnc import FILTERS, HEADER


def sizes(body: bytes) -> dict[str, int]:
    found = {
        "lzma raw, the file's filters (lc=0 lp=0 pb=0, preset 9e)":
            len(lzma.compress(body, format=lzma.FORMAT_RAW, filters=FILTERS)),
        "lzma raw, LZMA2 preset 9e defaults (lc=3 lp=0 pb=2)":
            len(lzma.compress(body, format=lzma.FORMAT_RAW, filters=[
                {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}])),
        "xz container, preset 9e": len(lzma.compress(body, preset=9 | lzma.PRESET_EXTREME)),
    }
    try:
        import zstandard
    except ImportError:
        print("zstandard is not installed (pip install zstandard): its rows are left out",
              file=sys.stderr)
        return found
    for level in (19, 22):
        found[f"zstd level {level}"] = len(zstandard.ZstdCompressor(level=level).compress(body))
    return found


def main(paths: list[str]) -> None:
    for name in paths:
        raw = Path(name).read_bytes()
        body = lzma.decompress(raw[HEADER.size:], format=lzma.FORMAT_RAW, filters=FILTERS)
        print(f"{name}: body {len(body):,} bytes; file {len(raw):,} bytes "
              f"(header {HEADER.size})")
        for codec, size in sorted(sizes(body).items(), key=lambda item: item[1]):
            print(f"  {size:>9,}  {codec}")


if __name__ == "__main__":
    main(sys.argv[1:])
