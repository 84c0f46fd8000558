"""Model compression: magnitude pruning in training (`prune`, from the weights `start` reads),
weight sharing by a per-layer codebook (`codebook`), and the compressed model file that stores
both (`mnc`). `prune` and `codebook` import no MXNet: the parameter servers' update loads them."""
