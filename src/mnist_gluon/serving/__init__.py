"""mnist-serve: the HTTP app (`app`), what it accepts (`inputs`), how it treats connections
(`connections`), its settings (`settings`), and the draw-a-digit page."""
