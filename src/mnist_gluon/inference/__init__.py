"""A checkpoint put to use: loaded as a classifier of raw pixels (`classifier`), evaluated on a
test set (`evaluate`), asked about images (`images`, `predict`), drawn (`plots`) and exported
(`export`)."""
