"""The figures: every one written, and the notebook that regenerates them."""

import json
from pathlib import Path

from typer.testing import CliRunner

from scaling.cli import app
from tests.helpers import chinchilla_like, with_auroc


def test_plot_writes_every_figure(tmp_path):
    path = tmp_path / "runs.csv"
    with_auroc(chinchilla_like()).write_csv(path)
    result = CliRunner().invoke(app, ["plot", str(path), "--out", str(tmp_path / "figs"), "--resamples", "20"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in (tmp_path / "figs").iterdir()}
    for figure in ("isoflop_curves", "optimal_scaling", "loss_frontier", "auroc_vs_compute", "loss_vs_auroc"):
        assert {f"{figure}.png", f"{figure}.svg"} <= names
        assert (tmp_path / "figs" / f"{figure}.png").stat().st_size > 10_000


def test_notebook_regenerates_the_figures(tmp_path):
    """Run the notebook's code cells in order, on a small table, as a kernel would."""
    notebook = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "regenerate_figures.ipynb").read_text())
    table = tmp_path / "runs.csv"
    with_auroc(chinchilla_like()).write_csv(table)
    cells = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    cells[0] = (
        f'from pathlib import Path\nTABLE = Path("{table}")\nOUT = Path("{tmp_path / "figs"}")\n'
        "COLUMNS = {}\nRESAMPLES = 20"
    )
    namespace: dict = {}
    for code in cells:
        exec(compile(code, "notebook", "exec"), namespace)
    assert (tmp_path / "figs" / "isoflop_curves.svg").exists() and "isoflop" in namespace["answer"]
