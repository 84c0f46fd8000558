"""mnist-sweep: what a sweep searches (`search`), and the Optuna study that runs its trials as
mnist-train processes and gathers their results (`study`)."""
