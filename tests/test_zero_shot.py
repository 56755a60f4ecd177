"""Zero-shot evaluation: rules, what they watch, the estimators' scores, leakage, and `ehrscale eval --zero-shot`."""

import json
import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from scaling.cli import app
from scaling.data.dataset import PreparedDataset
from scaling.data.tasks import TaskConfig
from scaling.eval import zero_shot
from scaling.eval.zero_shot_rules import RuleError, Settings, ZeroShotRule, built_in_rules, parse_rules, rule_for
from scaling.models.sampler import EVENT, HORIZON, Sampler
from scaling.runspec import parse_spec
from scaling.training.tasks import build_model
from tests.helpers import write_toml

RULES = built_in_rules(TaskConfig())


def test_every_built_in_task_has_a_rule_and_a_users_task_needs_one():
    from scaling.data.tasks import TASKS

    assert set(RULES) == set(TASKS)
    assert RULES["long_stay"].horizon_is_outcome and RULES["long_stay"].horizon_hours == 7 * 24 - 24
    assert RULES["abnormal_creatinine"].value_above == 1.3 and RULES["abnormal_creatinine"].horizon_hours == 48
    mine = ZeroShotRule(outcome=("^X$",))
    assert rule_for("mine", RULES, {"mine": mine}) is mine
    with pytest.raises(RuleError, match="zero-shot is not available for 'other'.*--rules"):
        rule_for("other", RULES, {})


def test_a_rules_file_is_read_and_its_mistakes_are_named(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(
        '[tasks.readmit]\noutcome = "^HOSPITAL_ADMISSION//"\nstop = ["^MEDS_DEATH$"]\nhorizon_hours = 720\n'
    )
    from scaling.eval.zero_shot_rules import read_rules

    assert read_rules(path) == {
        "readmit": ZeroShotRule(outcome=("^HOSPITAL_ADMISSION//",), stop=("^MEDS_DEATH$",), horizon_hours=720)
    }
    where = str(path)
    with pytest.raises(RuleError, match=r"rules.toml: \[tasks.t\] has unknown fields \['outcomes'\]"):
        parse_rules({"tasks": {"t": {"outcomes": ["x"]}}}, where)
    with pytest.raises(RuleError, match=r"\[tasks.t\]: a rule needs outcome codes"):
        parse_rules({"tasks": {"t": {"stop": ["x"]}}}, where)
    with pytest.raises(RuleError, match="needs a finite horizon_hours"):
        parse_rules({"tasks": {"t": {"horizon_is_outcome": True}}}, where)
    with pytest.raises(RuleError, match="not a regular expression"):
        parse_rules({"tasks": {"t": {"outcome": ["("]}}}, where)
    with pytest.raises(RuleError, match="format 2 is newer"):
        parse_rules({"format": 2}, where)
    with pytest.raises(RuleError, match="futures must be at least 1"):
        Settings(futures=0)


def test_rules_watch_the_right_tokens(prepared):
    vocab = PreparedDataset.open(prepared[0]).vocabulary()
    index = {token: i for i, token in enumerate(vocab.tokens)}
    mortality = zero_shot.read_rule(RULES["in_hospital_mortality"], vocab)
    # a death in hospital is MIMIC-IV's discharge to DIED, which comes before MEDS_DEATH at the same time
    assert mortality.matched["outcome"] == ["HOSPITAL_DISCHARGE//DIED", "MEDS_DEATH"]
    assert mortality.matched["stop"] and all(t.startswith("HOSPITAL_DISCHARGE//") for t in mortality.matched["stop"])
    assert "HOSPITAL_DISCHARGE//DIED" not in mortality.matched["stop"]
    assert np.flatnonzero(mortality.watch.event).tolist() == sorted(
        [index["MEDS_DEATH"], index["HOSPITAL_DISCHARGE//DIED"]]
    )
    # A long stay is reaching the horizon: the watched event is a discharge or a death, nothing stops a future.
    stay = zero_shot.read_rule(RULES["long_stay"], vocab)
    assert stay.watch.event[index["MEDS_DEATH"]] and not stay.watch.stop.any()
    assert stay.watch.horizon_minutes == 144 * 60
    assert stay.outcome(np.array([HORIZON, EVENT])).tolist() == [True, False]
    assert stay.rollout_risk(np.array([0.3])).tolist() == [0.3]
    # High creatinine: the value tokens after the creatinine code whose bin lies above 1.3 mg/dL.
    creatinine = zero_shot.read_rule(RULES["abnormal_creatinine"], vocab)
    (code,) = creatinine.matched["outcome"]
    assert "50912" in code and not creatinine.watch.event.any()
    row = creatinine.watch.event_after[index[code]]
    high = [vocab.tokens[i] for i in np.flatnonzero(creatinine.watch.event_values[row])]
    edges = vocab.quantiles.filter(pl.col("code") == code).drop("code").row(0)
    middles = [edges[0], *((a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)), edges[-1]]
    assert high == [f"Q{i + 1}" for i, m in enumerate(middles) if m > 1.3] and 0 < len(high) < 10
    minutes = zero_shot.token_minutes(vocab)
    assert minutes[index["TIME//1h-2h"]] == pytest.approx(math.sqrt(60 * 120))
    assert minutes[index["TIME//>6mt"]] == 259200
    assert minutes[index["MEDS_DEATH"]] == 0


def test_every_built_in_rule_read_on_the_actual_futures_agrees_with_its_labels(prepared):
    """A rule a perfect generator could not satisfy caps zero-shot AUROC whatever the model: read on what actually
    came after each prediction time, each built-in rule must give the task's labels (the mortality rules once read
    MIMIC-IV's discharge to DIED as a discharge, and no death ever)."""
    dataset = PreparedDataset.open(prepared[0])
    rules = built_in_rules(dataset.task_config())
    timelines = dataset.timelines("held_out")
    checked = {}
    for task in ("in_hospital_mortality", "icu_mortality", "long_stay", "abnormal_creatinine"):
        reading = zero_shot.read_rule(rules[task], dataset.vocabulary())
        rows = dataset.task(task).join(dataset.splits(), on="subject_id").filter(pl.col("split") == "held_out")
        inclusive = dataset.task_inputs(task) == "at_or_before"
        cuts = rows["prediction_time"].dt.epoch("us").to_numpy()
        history, _, keep = timelines.histories(rows["subject_id"].to_numpy(), cuts, inclusive)
        rows = rows.filter(pl.Series(keep))
        y = rows["boolean_value"].to_numpy().astype(np.int64)
        checked[task] = zero_shot.rule_on_actual_futures(reading, timelines, rows, inclusive, history, y)
        assert y.sum() > 0, task
    for task, actual in checked.items():
        assert actual["agreement"] >= 0.9 and actual["auroc"] >= 0.9 and actual["ended_by_rule"] >= 0.9, (task, actual)
    assert checked["in_hospital_mortality"]["agreement"] == 1.0, checked


def test_calibration_error_and_reliability_of_known_risks():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    risk = np.array([0.05, 0.05, 0.05, 0.05, 0.95, 0.95, 0.95, 0.95])
    # Two bins: observed 0.5 at 0.05 (error 0.45) and 0.75 at 0.95 (error 0.2), four rows each.
    assert zero_shot.expected_calibration_error(y, risk) == pytest.approx((0.45 + 0.2) / 2)
    table = zero_shot.reliability(y, risk)
    assert table == {"predicted": [0.05, 0.95], "observed": [0.5, 0.75]}
    assert zero_shot.band(0.005).startswith("rare") and zero_shot.band(0.3).startswith("common")


def test_more_futures_sharpen_the_monte_carlo_risk():
    """A planted risk: each row's futures reach the outcome with its own probability; averaging more of them ranks
    the rows better, and the curve says so."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 400)
    y = rng.uniform(0, 1, 400) < p
    draws = (rng.uniform(0, 1, (400, 16)) < p[:, None]).astype(float)
    scores, risk = zero_shot.estimator_scores(y.astype(int), draws, seed=0)
    curve = scores["auroc_by_futures"]
    assert list(curve) == [1, 2, 4, 8, 16] and curve[16] > curve[1] + 0.05
    assert scores["auroc_lo"] <= scores["auroc"] <= scores["auroc_hi"]
    assert scores["ece"] < 0.08 and np.allclose(risk, draws.mean(axis=1))
    assert scores["mean_standard_error"] == pytest.approx(np.mean(draws.std(axis=1, ddof=1) / 4))


@pytest.fixture(scope="module")
def decoder(prepared):
    dataset = PreparedDataset.open(prepared[0])
    spec = parse_spec(
        {"name": "z", "data": str(prepared[0]), "width": 16, "tokens": 1000, "recipe": {"context": 32}}, "test"
    )
    model, _, _ = build_model(spec, dataset)
    return dataset, Sampler(model, rows=64, context=32)


def test_futures_read_nothing_after_the_prediction_time(decoder):
    """Every event at or after each subject's first prediction time is replaced: the futures (same seed) do not
    change."""
    dataset, sampler = decoder
    task = "in_hospital_mortality"
    labels = dataset.task(task).join(dataset.splits(), on="subject_id")
    rows = labels.filter(pl.col("split") == "held_out").group_by("subject_id").agg(pl.col("prediction_time").min())
    rows = rows.sort("subject_id")
    timelines = dataset.timelines("held_out")
    cut_of = dict(rows.iter_rows())
    tokens = np.array(timelines.tokens)
    for i, subject in enumerate(timelines.subject_ids):
        if int(subject) in cut_of:
            lo, hi = timelines.offsets[i], timelines.offsets[i + 1]
            later = np.asarray(timelines.times[lo:hi]) >= np.datetime64(cut_of[int(subject)], "us").astype(np.int64)
            tokens[lo:hi][later] = 5
    altered = replace(timelines, tokens=tokens)
    reading = zero_shot.read_rule(RULES[task], dataset.vocabulary())
    settings = Settings(futures=2, max_new_tokens=12)
    outcomes = []
    for source in (timelines, altered):
        cuts = rows["prediction_time"].dt.epoch("us").to_numpy()
        history, prefixes, keep = source.histories(rows["subject_id"].to_numpy(), cuts, inclusive=False)
        assert keep.all() and len(history) > 5
        outcome, rollout, completed, tokens_made = zero_shot.generate(
            sampler, reading, history, prefixes, settings, avoid=False
        )
        outcomes.append((outcome, rollout, completed, tokens_made))
    for before, after in zip(*outcomes, strict=True):
        np.testing.assert_array_equal(before, after)


class _AskedAfterDeath:
    """The prepared dataset with one more task: the held-out subjects who died, asked a day after their death
    (label True) and a day before it (label False)."""

    def __init__(self, dataset: PreparedDataset):
        self.dataset = dataset
        events = pl.read_parquet(dataset.root / "events" / "data" / "**" / "*.parquet")
        deaths = events.filter(pl.col("code") == "MEDS_DEATH").group_by("subject_id").agg(pl.col("time").min())
        held = deaths.join(dataset.splits(), on="subject_id").filter(pl.col("split") == "held_out")
        self.deaths = held.height
        self.rows = pl.concat(
            [
                held.select("subject_id", prediction_time=pl.col("time") + pl.duration(days=1), boolean_value=True),
                held.select("subject_id", prediction_time=pl.col("time") - pl.duration(days=1), boolean_value=False),
            ]
        )

    def task(self, name):
        return self.rows

    def task_inputs(self, name):
        return "before"

    def __getattr__(self, name):
        return getattr(self.dataset, name)


def test_a_history_that_holds_a_once_only_outcome_is_refused(decoder, monkeypatch):
    """A user's death task asked after the death: those rows are refused and counted, not scored."""
    dataset, sampler = decoder
    monkeypatch.setattr(zero_shot, "MIN_CLASS", 1)
    asked = _AskedAfterDeath(dataset)
    assert asked.deaths >= 1
    rule = ZeroShotRule(outcome=("^MEDS_DEATH$",), once=True)
    entry, scored, risk = zero_shot.zero_shot_task(sampler, asked, "after_death", rule, Settings(2, 8, 0))
    assert entry["rows_refused_outcome_in_history"] == asked.deaths
    assert entry["status"] == "too small" and "0 positives" in entry["reason"] and risk is None


def test_eval_zero_shot_on_a_trained_decoder(prepared, tmp_path, monkeypatch):
    """`ehrscale eval RUN --zero-shot` prints each task's AUROC, calibration and completion, writes eval.json's
    zero_shot entry and the held-out risks in the meds-evaluation schema, in the data folder."""
    monkeypatch.setattr(zero_shot, "MIN_CLASS", 1)  # the test dataset's held-out cohort is small
    prep = prepared[0]
    spec = write_toml(
        tmp_path / "run.toml",
        {"name": "z", "data": str(prep), "width": 16, "tokens": 20_000, "recipe": {"context": 32, "batch_rows": 8}},
    )
    run = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(app, ["train", str(spec), "--out", str(run)]).exit_code == 0
    arguments = ["eval", str(run), "--zero-shot", "--futures", "2", "--max-new-tokens", "16", "--zero-shot-rows", "0"]
    result = runner.invoke(app, [*arguments, "--tasks", "long_stay,in_hospital_mortality"])
    assert result.exit_code == 0, result.output
    entry = json.loads((run / "eval.json").read_text())["tasks"]["long_stay"]
    assert entry["probe"]["status"] == "not run"
    shot = entry["zero_shot"]
    assert shot["status"] == "ok" and shot["settings"]["futures"] == 2
    assert shot["auroc_lo"] <= shot["auroc"] <= shot["auroc_hi"] and 0 <= shot["monte_carlo"]["ece"] <= 1
    assert 0 <= shot["completed"] <= 1 and shot["generated_tokens"] > 0
    assert f"long_stay (zero-shot, 2 futures per row, {shot['n']} rows" in result.output
    assert "rollout     AUROC" in result.output and "ended by a rule" in result.output
    # 16 tokens cut most futures: the output says so and why it matters
    assert shot["completed"] < 0.95 and "reached the token limit and count as no outcome" in result.output
    actual = shot["rule_on_actual_futures"]  # the rule on what really came after: the most it can give
    assert actual["agreement"] >= 0.9 and "the rule on the patients' actual futures" in result.output
    predictions = pl.read_parquet(shot["predictions"]["path"])
    assert shot["predictions"]["path"].startswith(str(prep / "predictions"))
    assert predictions.height == shot["n"] and "predicted_boolean_probability" in predictions.columns
    assert not any(run.rglob("*.parquet"))
    # The probe's entry, evaluated after, keeps the zero-shot one beside it; the table carries both.
    assert runner.invoke(app, ["eval", str(run), "--tasks", "long_stay"]).exit_code == 0
    from scaling.record import RunFolder

    task_eval = RunFolder(run).evaluation().tasks["long_stay"]
    columns = task_eval.columns("long_stay")
    assert task_eval.probe["status"] != "not run" and task_eval.baselines  # the probe's evaluation ran
    assert columns["zero_shot_auroc_long_stay"] == shot["auroc"] and "oracle_auroc_long_stay" in columns
    assert columns["zero_shot_rule_auroc_long_stay"] == actual["auroc"]


def test_eval_zero_shot_refuses_what_it_cannot_do(prepared, tmp_path):
    runner = CliRunner()
    prep = prepared[0]
    spec = write_toml(
        tmp_path / "bags.toml",
        {"name": "l", "data": str(prep), "family": "labrador", "width": 16, "tokens": 4000, "recipe": {"context": 128}},
    )
    run = tmp_path / "labrador"
    assert runner.invoke(app, ["train", str(spec), "--out", str(run)]).exit_code == 0
    result = runner.invoke(app, ["eval", str(run), "--zero-shot"])
    assert result.exit_code != 0 and "only the timeline decoder does; this is a labrador run" in result.output
    result = runner.invoke(app, ["eval", str(run), "--zero-shot", "--futures", "0"])
    assert result.exit_code != 0 and "futures must be at least 1" in result.output


def test_the_report_shows_zero_shot_auroc_against_training_and_inference_compute(tmp_path):
    """A table with the decoder's zero-shot columns: its law is fitted beside the probe's, the report's AUROC table
    gains a zero-shot column, and the inference figure has a line per training budget."""
    from analysis.downstream import fit_auroc, inference_curves
    from analysis.table import prepare
    from tests.helpers import chinchilla_like, with_auroc

    frame = with_auroc(chinchilla_like())
    rise = frame["auroc_mortality"] - 0.05
    frame = frame.with_columns(
        zero_shot_auroc_mortality=rise,
        zero_shot_auroc_mortality_lo=rise - 0.02,
        zero_shot_auroc_mortality_hi=rise + 0.02,
        zero_shot_tokens_per_future_mortality=pl.lit(40.0),
        zero_shot_rule_auroc_mortality=pl.lit(0.97),
        flops_per_token=6 * pl.col("params"),
        **{f"zero_shot_auroc_mortality_futures{n}": rise - 0.1 / n for n in (1, 2, 4)},
    )
    path = tmp_path / "runs.parquet"
    frame.write_parquet(path)
    table = prepare(frame)
    curves = inference_curves(table, "mortality")
    assert len(curves) == 6  # one per budget's frontier run
    first = curves[0]
    assert first["flops"][1] == pytest.approx(2 * first["flops"][0]) and first["auroc"] == sorted(first["auroc"])
    law = fit_auroc(table, "mortality", resamples=20, zero_shot=True)
    assert law.task == "mortality (zero-shot)" and law.points == 6 and law.h < fit_auroc(table, "mortality").h
    figures = tmp_path / "figs"
    runner = CliRunner()
    assert runner.invoke(app, ["plot", str(path), "--out", str(figures), "--resamples", "20"]).exit_code == 0
    assert (figures / "zero_shot_vs_inference.png").exists() and (figures / "auroc_vs_compute.png").exists()
    out = tmp_path / "report.md"
    result = runner.invoke(
        app, ["report", str(path), "--out", str(out), "--figures", str(figures), "--resamples", "20"]
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "| probe AUROC [95%] | zero-shot AUROC [95%] |" in text
    assert "Saturating law of the zero-shot AUROC along the frontier" in text
    assert "zero_shot_vs_inference.png" in text
    assert "rule read on the patients' actual futures scores 0.970" in text


def test_eval_zero_shot_in_a_spec_is_parsed_and_its_mistakes_are_named(prepared):
    from scaling.runspec import SpecError
    from scaling.sweep.spec import parse_sweep
    from tests.helpers import spec_dict, sweep_source

    spec = parse_spec(spec_dict(prepared[0], eval={"zero_shot": {"futures": 4, "rows": 50}}), "run.toml")
    assert spec.eval.zero_shot == Settings(futures=4, rows=50)
    stored = json.loads(json.dumps(spec.to_dict()))  # as the run folder's spec.json keeps it
    assert parse_spec(stored, "spec.json").eval == spec.eval
    assert parse_spec(spec_dict(prepared[0]), "run.toml").eval.zero_shot is None
    sweep = parse_sweep(sweep_source(prepared[0], "runs", eval={"zero_shot": {"futures": 2}}), "sweep.toml")
    assert sweep.eval.zero_shot.futures == 2
    with pytest.raises(SpecError, match=r"run.toml: \[eval\] zero_shot: unknown key\(s\) future"):
        parse_spec(spec_dict(prepared[0], eval={"zero_shot": {"future": 4}}), "run.toml")
    with pytest.raises(SpecError, match=r"\[eval\] zero_shot: futures must be at least 1"):
        parse_spec(spec_dict(prepared[0], eval={"zero_shot": {"futures": 0}}), "run.toml")
    with pytest.raises(SpecError, match="only the timeline decoder generates futures"):
        parse_sweep(
            sweep_source(prepared[0], "runs", family="labrador", eval={"zero_shot": {"futures": 2}}), "sweep.toml"
        )
    # runs = "frontier": the sweep, not the run, generates (for each budget's lowest-loss run; tests/test_sweep_ray.py)
    frontier = parse_spec(spec_dict(prepared[0], eval={"zero_shot": {"runs": "frontier"}}), "run.toml").eval
    assert frontier.zero_shot.runs == "frontier" and not frontier.at_run_end and spec.eval.at_run_end
    with pytest.raises(SpecError, match="runs must be one of every, frontier, got 'best'"):
        parse_spec(spec_dict(prepared[0], eval={"zero_shot": {"runs": "best"}}), "run.toml")
    # a sweep whose tasks lack a rule is refused before anything trains, naming the sweep and what to give
    from scaling.data.dataset import PreparedDataset
    from scaling.sweep.driver import check_zero_shot_rules

    missing = parse_sweep(
        sweep_source(prepared[0], "runs", eval={"zero_shot": {"rules": "/no/such/rules.toml"}}), "sweep.toml"
    )
    with pytest.raises(SpecError, match=r"sweep.toml: \[eval\] zero_shot: no rules file /no/such/rules.toml"):
        check_zero_shot_rules(missing, PreparedDataset.open(prepared[0]))
    check_zero_shot_rules(sweep, PreparedDataset.open(prepared[0]))  # long_stay has its built-in rule
