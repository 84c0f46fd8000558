"""Training on public data before a run's first step: digits drawn from TrueType fonts, which
hold no training image, so a private run's guarantee does not pay for them (train.pretrain)."""
