"""Training a model into a run folder. `train` is the whole run that mnist-train makes; `run`
takes it from start or resume to its end, an epoch at a time (`loop`), one step as one graph
(`step`, with `augment`'s augmentations and `optim`'s update), and knows where it stands
(`state`, `resume`). Around it: the run folder (`run_folder`), progress lines (`progress`),
TensorBoard (`tracking`), the weight average (`average`), signals that stop it cleanly
(`signals`), a sweep's trial (`trial`), and a parameter-server cluster's worker (`cluster`,
`server_update`)."""
