"""Differentially private training (DP-SGD, Abadi et al. 2016): what the guarantee covers
(`coverage`), Poisson-sampled batches and noise drawn from a run's secret key (`sampling`), each
example's gradient clipped before the sum (`clipping`), and the privacy spent, counted by
Google's dp-accounting (`accounting`)."""
