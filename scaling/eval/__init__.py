"""Downstream evaluation of trained runs: the linear probe, the baselines and the oracle, the lab-bag metrics."""
