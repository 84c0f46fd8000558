"""Model compression: magnitude pruning in training (`prune`), weight sharing by a per-layer
codebook (`codebook`), and the compressed model file that stores both (`mnc`)."""
