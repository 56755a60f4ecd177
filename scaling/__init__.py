"""ehrscale: scaling-law experiments for EHR foundation models (data, models, sweeps)."""

__version__ = "0.1.0"
