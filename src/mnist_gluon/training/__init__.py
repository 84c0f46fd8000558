"""Training: one step as one graph (step), one epoch (loop), where a run stands (state), the
data it trains on (data), the run from start or resume to the end (run)."""
