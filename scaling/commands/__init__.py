"""The command-line commands beyond `scaling.cli`'s own: the analysis of a table, the sweep, the trackers."""
