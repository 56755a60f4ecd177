"""Models: the timeline decoder, Labrador and the BERT baseline (flax.nnx)."""
