"""The family registry: every difference between model families is an entry of scaling/families.py."""

import dataclasses
import json
import re
from pathlib import Path

from scaling.export import CARD, CONFIG, export_run, load_exported
from scaling.families import FAMILIES, TIMELINES, loss_units
from scaling.record import RunFolder
from scaling.run import run
from scaling.sweep.state import collect
from tests.helpers import make_spec

SCALING = Path(__file__).resolve().parents[1] / "scaling"


def test_a_fourth_family_is_one_entry_in_the_registry(prepared, tmp_path, monkeypatch):
    """A family registered here, and nowhere else, trains, evaluates, is collected and exports with its own card."""
    toy = dataclasses.replace(
        FAMILIES["timeline"],
        name="toy",
        description="a toy decoder that a test registered",
        loss_unit="toy nats per token",
        lr_width_product=0.3,
    )
    monkeypatch.setitem(FAMILIES, "toy", toy)
    spec = make_spec(prepared[0], family="toy", width=16, tokens=20 * 16 * 32, tasks=["long_stay"])
    result = run(spec, tmp_path / "sweep" / "toy", log=lambda _: None)
    assert result.status == "ok" and result.family == "toy"
    assert result.peak_lr == spec.recipe.learning_rate(16) == 0.3 / 16  # the family's own lr rule
    assert "long_stay" in RunFolder(tmp_path / "sweep" / "toy").settled_tasks()
    table, _ = collect(tmp_path / "sweep")
    assert table["family"].to_list() == ["toy"] and table["loss"].to_list() == [result.loss]
    assert loss_units()["toy"] == "toy nats per token"
    folder = export_run(tmp_path / "sweep" / "toy", tmp_path / "export")
    card = (folder / CARD).read_text()
    assert "A toy decoder that a test registered" in card and "toy nats per token" in card
    assert json.loads((folder / CONFIG).read_text())["family"] == "toy"
    assert type(load_exported(folder)).__name__ == "Decoder"


def test_no_module_outside_the_registry_branches_on_a_family():
    """Family names and data kinds are compared in scaling/families.py only (models name their own classes)."""
    branch = re.compile(r"""\.data\s*[!=]=|family\s*[!=]=\s*["']|family\s+(not\s+)?in\s*\(["']""")
    offenders = [
        f"{path.relative_to(SCALING)}:{number}: {line.strip()}"
        for path in sorted(SCALING.rglob("*.py"))
        if path.name != "families.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if branch.search(line)
    ]
    assert not offenders, "\n".join(offenders)


def test_each_family_names_its_data_its_unit_and_its_card():
    for name, family in FAMILIES.items():
        assert family.name == name and family.description and family.loss_unit
        assert family.data.tokenizer_files and family.data.batch_fields
    assert FAMILIES["timeline"].data is TIMELINES and not TIMELINES.packs_bags
    assert {f.data.name for f in FAMILIES.values()} == {"timelines", "bags"}
