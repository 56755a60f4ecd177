"""Any MEDS dataset, and the user's own tasks: data nobody here wrote (meds-testing-helpers, the reference
MIMIC-IV MEDS ETL's output), MEDS label files in, every unusable label row counted by reason."""

import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from scaling.cli import app
from scaling.data.csv_stream import SourceError
from scaling.data.dataset import DatasetError, PreparedDataset
from scaling.data.labbags import BagConfig
from scaling.data.labels import LabelSource, parse_labels_option
from scaling.data.meds_io import validate_meds
from scaling.data.prepare import PrepareConfig, prepare
from scaling.data.synthetic import write_synthetic_mimic
from scaling.data.timelines import TokenizerConfig
from scaling.eval import baselines as baselines_module
from tests.helpers import event_frame

REFERENCE_MEDS = Path(__file__).parent / "data" / "reference_mimic_meds"


def build_sample(out: Path, subjects: int, seed: int = 1) -> Path:
    """A MEDS dataset from meds-testing-helpers' own generator (its command, as a user runs it)."""
    tool = Path(sys.executable).parent / "build_sample_MEDS_dataset"
    subprocess.run(
        [str(tool), f"output_dir={out}", f"N_subjects={subjects}", f"seed={seed}"], check=True, capture_output=True
    )
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """300 subjects from meds-testing-helpers: no text_value column, an empty codes.parquet, static events."""
    return build_sample(tmp_path_factory.mktemp("mth") / "meds", 300)


def static_label(sample: Path) -> pl.DataFrame:
    """One label per subject at its third timed event: does the subject carry the static code static//0?"""
    events = pl.read_parquet(sample / "data")
    marked = events.filter(pl.col("code") == "static//0")["subject_id"].unique().implode()
    third = (
        events.filter(pl.col("time").is_not_null())
        .sort("subject_id", "time")
        .group_by("subject_id", maintain_order=True)
        .agg(prediction_time=pl.col("time").slice(2, 1).first())
        .drop_nulls()
    )
    return third.with_columns(boolean_value=pl.col("subject_id").is_in(marked))


def prepare_cli(meds: Path, out: Path, *options: str):
    """`ehrscale data prepare --meds MEDS --out OUT [options]`, as a user types it."""
    return CliRunner().invoke(app, ["data", "prepare", "--meds", str(meds), "--out", str(out), *options])


def write_labels(folder: Path, frame: pl.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(folder / "labels.parquet")
    return folder


def test_a_meds_testing_helpers_dataset_prepares_and_says_what_it_lacks(sample, tmp_path):
    manifest = prepare(PrepareConfig(out=tmp_path / "p", meds=sample))
    assert "optional column(s) text_value absent from the data: added as nulls" in manifest["notes"]
    assert (
        "metadata/codes.parquet described 0 of the 11 codes in the data: the rest were added with generic descriptions"
        in manifest["notes"]
    )
    assert manifest["counts"]["codes"] == 11 and manifest["counts"]["subjects"] == 300
    validate_meds(tmp_path / "p" / "events")
    dataset = PreparedDataset.open(tmp_path / "p")
    assert dataset.codes().height == 11 and dataset.codes()["count"].sum() == manifest["counts"]["events"]
    own = pl.read_parquet(sample / "metadata" / "subject_splits.parquet")
    assert manifest["counts"]["subjects_by_split"] == dict(own.group_by("split").len().sort("split").iter_rows())
    assert sum(s["subjects"] for s in manifest["timelines"].values()) == 300
    assert manifest["bags"]["note"].startswith("no lab bags: no code matches the lab rule")
    assert dataset.task_names(with_labels=True) == ()
    # "numeric codes measured together" finds this dataset's labs: the codes that usually carry a number.
    numeric = prepare(
        PrepareConfig(
            out=tmp_path / "n",
            meds=sample,
            bags=BagConfig(lab_codes="numeric", numeric_share=0.4, min_code_count=50, min_labs=2),
        )
    )
    train = own.filter(pl.col("split") == "train")["subject_id"].implode()
    expected = (
        pl.read_parquet(sample / "data")
        .filter(pl.col("subject_id").is_in(train) & pl.col("time").is_not_null())
        .group_by("code")
        .agg(n=pl.len(), share=pl.col("numeric_value").is_not_null().mean())
        .filter((pl.col("share") >= 0.4) & (pl.col("n") >= 50))["code"]
    )
    assert set(PreparedDataset.open(tmp_path / "n").lab_vocabulary().items) == set(expected) != set()
    assert sum(numeric["bags"]["bags_by_split"].values()) > 0 and "note" not in numeric["bags"]


def test_the_cli_summary_says_there_are_no_bags_and_no_built_in_labels(sample, tmp_path):
    result = prepare_cli(sample, tmp_path / "p")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "11 codes" in text and "pass --bag-codes numeric" in text
    assert "the built-in tasks need MIMIC-IV's admission and ICU codes" in text
    bad = prepare_cli(sample, tmp_path / "q", "--bag-codes", "(x")
    assert bad.exit_code == 2 and "is not 'mimic-labs', 'numeric' or a regular expression" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "q").exists()


def test_extra_columns_missing_metadata_and_foreign_splits_are_handled_and_noted(sample, tmp_path):
    source = tmp_path / "meds"
    (source / "data").mkdir(parents=True)
    for path in sorted((sample / "data").glob("*.parquet")):
        frame = pl.read_parquet(path).with_columns(unit=pl.lit("mg"))
        frame.write_parquet(source / "data" / path.name)
    (source / "metadata").mkdir()
    splits = pl.read_parquet(sample / "metadata" / "subject_splits.parquet").sort("subject_id")
    left_out, other = splits["subject_id"][:10], splits["subject_id"][10:15]
    kept = splits.filter(~pl.col("subject_id").is_in(left_out.implode())).with_columns(
        split=pl.when(pl.col("subject_id").is_in(other.implode())).then(pl.lit("calibration")).otherwise("split")
    )
    kept.write_parquet(source / "metadata" / "subject_splits.parquet")
    pl.DataFrame({"code": ["static//0"]}).write_parquet(source / "metadata" / "codes.parquet")  # code alone is valid
    manifest = prepare(PrepareConfig(out=tmp_path / "p", meds=source))
    notes = manifest["notes"]
    assert "extra column(s) unit kept in the events, not used" in notes
    assert any(n.startswith("10 subject(s) with events are not in metadata/subject_splits.parquet") for n in notes)
    assert any("calibration 5" in n for n in notes)
    assert (
        "metadata/codes.parquet described 1 of the 11 codes in the data: the rest were added with generic descriptions"
        in notes
    )
    codes = pl.read_parquet(tmp_path / "p" / "events" / "metadata" / "codes.parquet")
    assert codes.height == 11 and codes.columns[:3] == ["code", "description", "parent_codes"]
    events = pl.read_parquet(tmp_path / "p" / "events" / "data")
    assert events.columns[:6] == ["subject_id", "time", "code", "numeric_value", "text_value", "unit"]
    assert events.schema["numeric_value"] == pl.Float32
    # The calibration split's subjects stay in the events and out of timelines, bags and evaluation.
    assert sum(s["subjects"] for s in manifest["timelines"].values()) == 295
    assert (source / "metadata" / "subject_splits.parquet").exists()
    assert pl.read_parquet(source / "metadata" / "subject_splits.parquet").height == 290  # the source is untouched


def test_the_reference_mimic_etl_output_prepares_like_our_own_reader(tmp_path):
    """tests/data/reference_mimic_meds: mimic-iv-meds 0.2.0 run on our 20-patient synthetic MIMIC-IV (seed 0)."""
    theirs = prepare(PrepareConfig(out=tmp_path / "theirs", meds=REFERENCE_MEDS, bags=BagConfig(min_code_count=20)))
    assert theirs["counts"]["subjects"] == 20 and theirs["counts"]["shards"] == 3  # data/{train,tuning,held_out}/
    write_synthetic_mimic(tmp_path / "mimic", 20, seed=0, workers=1)
    ours = prepare(PrepareConfig(out=tmp_path / "ours", mimic=tmp_path / "mimic", bags=BagConfig(min_code_count=20)))
    total = lambda m, task: sum(v["n"] for v in m["tasks"]["labels"][task]["by_split"].values())  # noqa: E731
    # The same admissions, ICU stays, deaths and creatinine results found in both codings of the same files
    # (regenerate the folder with its README's commands if the synthetic MIMIC-IV changes).
    for task in ("in_hospital_mortality", "long_stay", "icu_mortality", "abnormal_creatinine"):
        assert total(theirs, task) == total(ours, task) > 0, task
    # Lab bags hold hospital labs on both paths: the reference ETL codes ICU charts LAB//<itemid>//<unit> too, and
    # the default rule leaves those out (counted) by their item id, so its items are a subset of ours.
    their_items = set(PreparedDataset.open(tmp_path / "theirs").lab_vocabulary().items)
    our_items = set(PreparedDataset.open(tmp_path / "ours").lab_vocabulary().items)
    assert len(their_items) > 20 and their_items <= our_items
    assert all(50000 <= int(item) <= 59999 for item in their_items | our_items)
    left_out = theirs["bags"]["left_out_by_rule"]["ICU charted items (icu/d_items ids 220000-239999)"]
    assert left_out["items"] >= 6 and left_out["rows"] > 1000 and ours["bags"]["left_out_by_rule"] == {}
    # Dense charts found by how often they recur, not by their name: the same ICU items on both paths.
    item = lambda code: code.split("//")[1]  # noqa: E731
    their_dense = {item(c) for c in PreparedDataset.open(tmp_path / "theirs").vocabulary().dense_codes}
    our_dense = PreparedDataset.open(tmp_path / "ours").vocabulary().dense_codes
    assert all(code.startswith("CHART//") for code in our_dense) and their_dense == {item(c) for c in our_dense}
    assert {"220045", "220277"} <= their_dense  # heart rate and SpO2, charted hourly


def test_labels_in_the_meds_schema_become_a_task(sample, tmp_path):
    labels = write_labels(tmp_path / "labels" / "nested", static_label(sample))
    manifest = prepare(
        PrepareConfig(
            out=tmp_path / "p", meds=sample, labels=(LabelSource("mine/static/third_event", tmp_path / "labels"),)
        )
    )
    task = manifest["tasks"]["labels"]["mine/static/third_event"]
    assert task["source"] == "labels" and task["inputs"] == "at_or_before" and task["rows_read"] == 300
    assert task["excluded"] == {} and sum(v["n"] for v in task["by_split"].values()) == 300
    dataset = PreparedDataset.open(tmp_path / "p")
    assert dataset.task_names(with_labels=True) == ("mine/static/third_event",)
    assert dataset.task("mine/static/third_event").equals(static_label(sample).sort("subject_id", "prediction_time"))
    assert (tmp_path / "p" / "tasks" / "mine" / "static" / "third_event.parquet").exists()
    with pytest.raises(DatasetError, match="no task 'other'.*--labels NAME=DIR"):
        dataset.task("other")
    assert labels.exists()


def test_every_unusable_label_row_is_counted_by_reason(sample, tmp_path):
    events = pl.read_parquet(sample / "data").filter(pl.col("time").is_not_null())
    spans = events.group_by("subject_id").agg(first=pl.col("time").min(), last=pl.col("time").max()).sort("subject_id")
    a, b, c, d = (spans.row(i, named=True) for i in range(4))
    rows = [
        (a["subject_id"], a["first"], True, None),  # usable
        (b["subject_id"], b["last"], False, None),  # usable
        (b["subject_id"], b["last"], False, None),  # duplicate: one kept
        (c["subject_id"], c["first"], True, None),  # these two disagree: both dropped
        (c["subject_id"], c["first"], False, None),
        (99_999_999, a["first"], True, None),  # unknown subject
        (d["subject_id"], d["first"] - timedelta(days=1), True, None),  # before the record
        (d["subject_id"], d["last"] + timedelta(days=1), True, None),  # after it
        (d["subject_id"], d["last"], None, 2.5),  # a float value only
        (a["subject_id"], a["last"], None, None),  # no value at all
    ]
    frame = pl.DataFrame(
        rows,
        schema={
            "subject_id": pl.Int64,
            "prediction_time": pl.Datetime("us"),
            "boolean_value": pl.Boolean,
            "float_value": pl.Float32,
        },
        orient="row",
    )
    write_labels(tmp_path / "labels", frame)
    result = prepare_cli(sample, tmp_path / "p", "--labels", f"t={tmp_path / 'labels'}")
    assert result.exit_code == 0, result.output
    task = json.loads((tmp_path / "p" / "manifest.json").read_text())["tasks"]["labels"]["t"]
    assert task["rows_read"] == 10
    assert task["excluded"] == {
        "a non-boolean value only (integer, float or categorical)": 1,
        "no boolean_value": 1,
        "subject not in the dataset": 1,
        "prediction_time before the subject's first event": 1,
        "prediction_time after the subject's last event": 1,
        "labels that disagree at one subject and time (all dropped)": 2,
        "duplicate rows (one kept)": 1,
    }
    assert sum(v["n"] for v in task["by_split"].values()) == 2
    text = " ".join(result.output.split())
    assert "task t: 10 label rows read, inputs at or before prediction_time; dropped:" in text
    assert "subject not in the dataset: 1" in text


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pl.DataFrame({"subject_id": [1], "boolean_value": [True]}), r"labels.parquet: no column 'prediction_time'"),
        (
            pl.DataFrame({"subject_id": [1], "prediction_time": [datetime(2000, 1, 1)], "float_value": [1.0]}),
            r"no column 'boolean_value' \(it has float_value only\): ehrscale evaluates boolean tasks",
        ),
        (
            pl.DataFrame({"subject_id": [1], "prediction_time": [datetime(2000, 1, 1)], "boolean_value": ["yes"]}),
            r"column 'boolean_value' has type String, which MEDS labels do not use there",
        ),
        (
            pl.DataFrame({"subject_id": ["a"], "prediction_time": [datetime(2000, 1, 1)], "boolean_value": [True]}),
            r"column 'subject_id' has type String",
        ),
        (
            pl.DataFrame(
                {"subject_id": [99_999_999], "prediction_time": [datetime(2000, 1, 1)], "boolean_value": [True]}
            ),
            r"none of its 1 rows can be used \(subject not in the dataset: 1\)",
        ),
    ],
)
def test_label_files_that_cannot_be_used_are_refused_with_the_file_and_column(sample, tmp_path, frame, message):
    write_labels(tmp_path / "labels", frame)
    with pytest.raises(SourceError, match=message):
        prepare(PrepareConfig(out=tmp_path / "p", meds=sample, labels=(LabelSource("t", tmp_path / "labels"),)))
    assert not (tmp_path / "p").exists()


def test_label_options_are_checked_before_anything_is_read(tmp_path):
    cases = [
        (["long_stay=/x"], [], "'long_stay' is a built-in task's name"),
        (["mortality/in_icu/first_24h=/x"], [], "is a built-in task's name"),
        (["a/../b=/x"], [], "use letters, digits"),
        (["nodir"], [], "give NAME=DIR"),
        (["t=/x", "t=/y"], [], "task 't' given twice"),
        (["t=/x"], ["u=before"], "no --labels task named 'u'"),
        (["t=/x"], ["t=after"], "give NAME=at_or_before or NAME=before"),
    ]
    for values, inputs, message in cases:
        with pytest.raises(SourceError, match=message):
            parse_labels_option(values, inputs)
    assert parse_labels_option(["t=/x"], ["t=before"])[0] == LabelSource("t", Path("/x"), "before")
    result = prepare_cli(tmp_path, tmp_path / "p", "--labels", f"t={tmp_path / 'none'}")
    assert result.exit_code == 2 and "no such file or folder" in result.output and "Traceback" not in result.output


def boundary_dataset(root: Path) -> tuple[Path, datetime]:
    """Forty subjects whose labs come at 10:00 and 12:00; a label at exactly 12:00 for each."""
    noon = datetime(2020, 5, 1, 12)
    rows = []
    for subject in range(1, 41):
        rows.append((subject, None, "SEX//F", None, None))
        for when in (noon - timedelta(hours=2), noon):
            rows += [(subject, when, f"LAB//{50860 + i}//u", float(subject + i + when.hour), None) for i in (1, 2, 3)]
        rows.append((subject, noon + timedelta(days=1), "DISCHARGE", None, None))
    frame = event_frame(rows)
    (root / "data").mkdir(parents=True)
    frame.write_parquet(root / "data" / "0.parquet")
    return root, noon


def _boundary_bags_with_a_noon_task(tmp_path: Path) -> PreparedDataset:
    """`boundary_dataset` prepared with every lab kept in the bags and a task "t" predicting at noon."""
    root, noon = boundary_dataset(tmp_path / "meds")
    labels = pl.DataFrame({"subject_id": [1, 2], "prediction_time": [noon] * 2, "boolean_value": [True, False]})
    write_labels(tmp_path / "labels", labels)
    bags = BagConfig(min_code_count=1, drop_subsets=False)
    prepare(PrepareConfig(out=tmp_path / "p", meds=root, labels=(LabelSource("t", tmp_path / "labels"),), bags=bags))
    return PreparedDataset.open(tmp_path / "p")


@pytest.mark.parametrize(("inputs", "labs_seen"), [("at_or_before", 6), ("before", 3)])
def test_events_at_the_prediction_time_are_seen_only_when_the_task_says_so(tmp_path, inputs, labs_seen):
    root, noon = boundary_dataset(tmp_path / "meds")
    labels = pl.DataFrame(
        {"subject_id": list(range(1, 41)), "prediction_time": [noon] * 40, "boolean_value": [True, False] * 20}
    )
    write_labels(tmp_path / "labels", labels)
    manifest = prepare(
        PrepareConfig(
            out=tmp_path / "p",
            meds=root,
            labels=(LabelSource("t", tmp_path / "labels", inputs),),
            tokenizer=TokenizerConfig(min_code_count=1),
            bags=BagConfig(min_code_count=1, drop_subsets=False),
        )
    )
    assert manifest["tasks"]["labels"]["t"]["inputs"] == inputs
    dataset = PreparedDataset.open(tmp_path / "p")
    assert dataset.task_inputs("t") == inputs
    # The baselines' features: three labs at 10:00, and the three at 12:00 only when they are visible.
    frame, columns = baselines_module.features(dataset, dataset.task("t"), inputs == "at_or_before")
    counted = frame.select([c for c in columns if c.startswith("LAB//")]).to_numpy().sum(axis=1)
    assert (counted == labs_seen).all()
    # The timeline model's history: the tokens at 12:00 are in it exactly when the task says so.
    timelines = dataset.timelines("train")
    cut = int(np.datetime64(noon, "us").astype(np.int64))
    seen = timelines.history(0, cut, inputs == "at_or_before")
    _, times = timelines.subject(0)
    assert (times[len(seen) :] > cut).all() if inputs == "at_or_before" else (times[len(seen) :] >= cut).all()
    assert (times[: len(seen)] <= cut).all()


def test_a_built_in_task_answers_to_its_meds_dev_name(prepared):
    dataset = PreparedDataset.open(prepared[0])
    assert dataset.resolve_task("mortality/in_icu/first_24h") == "icu_mortality"
    assert dataset.task("mortality/in_icu/first_24h").equals(dataset.task("icu_mortality"))
    assert dataset.task_inputs("icu_mortality") == "before"


@pytest.mark.slow
def test_own_meds_data_and_task_end_to_end_with_predictions_an_outside_scorer_agrees_with(tmp_path):
    from meds_evaluation.evaluate import evaluate_binary_classification
    from sklearn.metrics import roc_auc_score

    sample = build_sample(tmp_path / "meds", 2000)
    write_labels(tmp_path / "labels", static_label(sample))
    runner = CliRunner()
    prep = tmp_path / "prep"
    result = prepare_cli(sample, prep, "--labels", f"has_static0={tmp_path / 'labels'}")
    assert result.exit_code == 0, result.output
    spec = tmp_path / "run.toml"
    spec.write_text(
        f'name = "mine"\ndata = "{prep}"\nwidth = 16\ntokens = 40_000\ntasks = ["has_static0"]\n'
        "[recipe]\ncontext = 64\n"
    )
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(spec), "--out", str(run)])
    assert result.exit_code == 0, result.output
    entry = json.loads((run / "eval.json").read_text())["tasks"]["has_static0"]
    probe = entry["probe"]
    assert probe["status"] == "ok" and probe["auroc_lo"] <= probe["auroc"] <= probe["auroc_hi"]
    assert entry["baselines"]["xgboost"]["auroc"] > 0.95  # the static code is in the baselines' features
    path = Path(entry["predictions"]["path"])
    assert path.is_relative_to(prep / "predictions") and not any(run.rglob("*.parquet"))
    predictions = pl.read_parquet(path)
    assert predictions.columns == [
        "subject_id",
        "prediction_time",
        "boolean_value",
        "predicted_boolean_value",
        "predicted_boolean_probability",
    ]
    assert predictions.height == probe["n"] == entry["predictions"]["rows"]
    metrics = evaluate_binary_classification(predictions)["samples_equally_weighted"]
    assert metrics["roc_auc_score"] == pytest.approx(probe["auroc"], abs=1e-12)
    truth = predictions["boolean_value"].to_numpy()
    assert roc_auc_score(truth, predictions["predicted_boolean_probability"].to_numpy()) == pytest.approx(
        probe["auroc"], abs=1e-12
    )
    # ehrscale eval on the same run (a fresh evaluation) says the same, and names the file.
    result = runner.invoke(app, ["eval", str(run), "--tasks", "has_static0"])
    assert result.exit_code == 0, result.output
    assert f"AUROC {probe['auroc']:.3f}" in result.output and "XGBoost" in result.output
    assert "predictions" in result.output
    shutil.rmtree(prep / "predictions")


def test_a_lab_bag_at_exactly_the_prediction_time_enters_the_probe_only_when_visible(tmp_path):

    from scaling.eval.evaluate import Embeddings, bag_vectors
    from scaling.families import FAMILIES
    from scaling.runspec import parse_spec
    from scaling.training.tasks import build_model

    dataset = _boundary_bags_with_a_noon_task(tmp_path)
    spec = parse_spec(
        {"name": "l", "data": str(tmp_path / "p"), "family": "labrador", "width": 16, "tokens": 1000}, "t"
    )
    model, _, context = build_model(spec, dataset)
    split = dataset.splits().filter(pl.col("subject_id").is_in([1, 2])).row(0, named=True)
    rows = dataset.task("t").filter(pl.col("subject_id") == split["subject_id"])
    seen, keep = bag_vectors(
        Embeddings(model), FAMILIES["labrador"], dataset, split["split"], rows, context, inclusive=True
    )
    strict, keep_strict = bag_vectors(
        Embeddings(model), FAMILIES["labrador"], dataset, split["split"], rows, context, inclusive=False
    )
    assert keep.all() and keep_strict.all()
    # Strictly before: the 10:00 bag alone. At or before: the mean of the 10:00 and the 12:00 bags.
    ten = rows.with_columns(prediction_time=pl.col("prediction_time") - timedelta(hours=1))
    alone, _ = bag_vectors(
        Embeddings(model), FAMILIES["labrador"], dataset, split["split"], ten, context, inclusive=True
    )
    assert np.allclose(strict, alone, atol=1e-6) and not np.allclose(seen, strict, atol=1e-3)


@pytest.mark.parametrize(("inclusive", "count", "hour"), [(True, 2, 12), (False, 1, 10)])
def test_the_bag_baselines_read_the_same_bags_as_the_bag_models(tmp_path, inclusive, count, hour):
    dataset = _boundary_bags_with_a_noon_task(tmp_path)
    split = dataset.splits().filter(pl.col("subject_id") == 1)["split"].item()
    rows = dataset.task("t").filter(pl.col("subject_id") == 1)
    x, keep = baselines_module.bag_features(dataset, rows, split, inclusive)
    vocabulary = dataset.lab_vocabulary()
    assert keep.tolist() == [True] and vocabulary.items == ("50861", "50862", "50863")
    # Each item's last eCDF value in the window (the 12:00 bag's when it is visible) and its count.
    raw = np.array([1 + item + hour for item in (1, 2, 3)], dtype=np.float64)
    expected = vocabulary.ecdf(np.arange(3), raw)
    assert np.allclose(x[0, :3], expected) and x[0, 3:].tolist() == [count] * 3
    # A prediction with no bag in the 24 h before it has no row, as in the bag models' probe.
    later = rows.with_columns(prediction_time=pl.col("prediction_time") + timedelta(days=3))
    assert baselines_module.bag_features(dataset, later, split, inclusive)[1].tolist() == [False]
