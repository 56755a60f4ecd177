"""Scaling-law fits and figures from a results table. Imports no JAX."""
