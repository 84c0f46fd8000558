"""A picture of the digits train.pretrain draws: 60 of them, 6 rows of 10, from seed 42 and the
fonts under /usr/share/fonts/truetype (docs/pretraining.md).

    python scripts/rendered_digits.py docs/rendered-digits.png
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from mnist_gluon.config import PretrainConfig
from mnist_gluon.pretraining.rendered_digits import font_files, render_digits

ROWS, COLUMNS, ZOOM = 6, 10, 3


def main() -> None:
    images, _ = render_digits(ROWS * COLUMNS, 42, font_files(PretrainConfig().fonts))
    grid = images.reshape(ROWS, COLUMNS, 28, 28).transpose(0, 2, 1, 3).reshape(ROWS * 28, -1)
    picture = Image.fromarray(np.ascontiguousarray(grid))
    picture.resize((picture.width * ZOOM, picture.height * ZOOM), Image.NEAREST).save(sys.argv[1])


if __name__ == "__main__":
    main()
