"""What a private run's guarantee covers: the training images only through its DP-SGD steps.
So it normalises with constants no image chose, and refuses what would use the images in other
ways (or run where its clipping cannot)."""

from __future__ import annotations

from ..data import Normalization
from ..errors import ConfigError

PUBLIC_NORMALIZATION = Normalization(0.0, 1.0)  # pixel / 255


def privacy_problem(config) -> str | None:
    """What makes `config`'s train.privacy unusable, read from the config alone; None: it is
    off, or usable so far (delta against the training examples is checked once they are read).
    """
    privacy, train = config.train.privacy, config.train
    if not privacy.on:
        if privacy.delta is not None:
            return ("train.privacy.delta is set but private training is off; set "
                    "train.privacy.noise_multiplier or train.privacy.target_epsilon too")
        return None
    if privacy.noise_multiplier is not None and privacy.target_epsilon is not None:
        return ("train.privacy sets both noise_multiplier and target_epsilon; set one (the "
                "other follows from it)")
    if privacy.delta is None:
        return ("train.privacy.delta is not set; private training needs it: 1e-5 for MNIST "
                "(below 1 / the training examples)")
    if privacy.augmentations > 1 and not config.data.augment.active:
        return (f"train.privacy.augmentations={privacy.augmentations} needs data.augment: "
                "without it the copies are the same image; set data.augment.shift=1, or "
                "augmentations back to 1")
    leaks = [
        (train.distill.teacher is not None, "train.distill.teacher",
         "a teacher trained without privacy on the same images"),
        (train.prune.start_from is not None, "train.prune.start_from",
         "weights trained without privacy on the same images"),
        (train.early_stopping.patience is not None, "train.early_stopping.patience",
         "its best epoch is chosen after later epochs spent privacy too"),
        (train.kvstore != "local", f"train.kvstore={train.kvstore}",
         "clipping and noise run on one device"),
        (train.skip_nonfinite, "train.skip_nonfinite",
         "whether a batch is skipped depends on its examples"),
        ("," in config.device, f"device={config.device}", "clipping and noise run on one device"),
    ]
    for bad, key, why in leaks:
        if bad:
            return f"{key} cannot be used with train.privacy ({why}); remove one of them"
    return None


def check_private(config) -> None:
    """Raise privacy_problem's ConfigError, if `config` has one."""
    if (problem := privacy_problem(config)) is not None:
        raise ConfigError(problem)
