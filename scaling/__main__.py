"""`python -m scaling ...` is the `ehrscale` command (what a Ray job runs on a cluster)."""

from scaling.cli import app

app(prog_name="ehrscale")
