"""What a prediction looked at: attributions of a class's logit to the raw pixels
(`attribution`), and their pictures (`heatmap`)."""

# Here, not in `attribution` (which imports MXNet), so that the commands can offer them as
# choices before MXNet loads; `attribution` says what each one computes.
METHODS = ("integrated_gradients", "gradient_x_input", "smoothgrad")
