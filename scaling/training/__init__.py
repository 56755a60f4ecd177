"""Training one run: the loop, its task and batches, the compiled step, checkpoints and step measurement."""
