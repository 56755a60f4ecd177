"""The run folder's one owner: typed records that round-trip, older formats read with notes, the table's columns
taken from the records by name."""

import dataclasses
import json

import pytest

from scaling.record import (
    EVAL_FORMAT,
    RESULT_FORMAT,
    EvalRecord,
    ResultRecord,
    RunError,
    RunFolder,
    StartRecord,
    TaskEval,
)
from scaling.sweep.state import COLUMNS, RunRow
from tests.helpers import RESULT


def test_every_record_round_trips_through_its_folder(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.start() is None and folder.result() is None and folder.evaluation() == EvalRecord()
    start = StartRecord({"family": "timeline", "tasks": ["t"]}, {"width": 16}, "ab", steps=10, tokens_per_step=64)
    folder.write_start(start)
    folder.write_result(RESULT)
    probe = {"status": "ok", "auroc": 0.7, "auroc_lo": 0.6, "auroc_hi": 0.8, "auprc": 0.3}
    folder.write_evaluation(EvalRecord({"t": TaskEval(probe, baselines={"xgboost": {"auroc": 0.75}})}))
    assert folder.start() == start and start.tokens == 640
    assert folder.result() == (RESULT, [])
    assert folder.settled_tasks() == {"t"}
    assert folder.evaluation().columns() == {
        "auroc_t": 0.7,
        "auroc_t_lo": 0.6,
        "auroc_t_hi": 0.8,
        "auprc_t": 0.3,
        "xgboost_auroc_t": 0.75,
    }
    written = json.loads((folder.path / "result.json").read_text())
    assert "branch_of" not in written and "value_mse" not in written  # optional fields only when set
    assert json.loads((folder.path / "eval.json").read_text())["format"] == EVAL_FORMAT == 3


def test_older_and_newer_result_formats(tmp_path):
    """Format 1 reads with a note and the values its fields had; a newer format than this ehrscale is refused; a
    field this version does not know is kept, not dropped."""
    folder = RunFolder(tmp_path)
    old = {k: v for k, v in RESULT.to_json().items() if k not in ("format", "loss_se", "budget", "lr_multiplier")}
    (tmp_path / "result.json").write_text(json.dumps(old | {"auroc_t": 0.7, "later_field": 3}))
    result, notes = folder.result()
    assert result.format == 1 and result.loss_se is None and result.budget is None and result.lr_multiplier == 1.0
    assert result.extra == {"later_field": 3} and "auroc_t" not in result.to_json()
    assert notes and notes[0].startswith("format 1")
    (tmp_path / "result.json").write_text(json.dumps(RESULT.to_json() | {"format": RESULT_FORMAT + 1}))
    with pytest.raises(ValueError, match="newer than this ehrscale reads"):
        folder.result()


def test_a_run_that_cannot_be_used_says_why(tmp_path):
    folder = RunFolder(tmp_path)
    with pytest.raises(RunError, match="no result.json, so the run has not finished"):
        folder.finished("evaluate")
    folder.write_result(dataclasses.replace(RESULT, status="diverged"))
    with pytest.raises(RunError, match="the run is diverged; nothing to export"):
        folder.finished("export")


def test_attempts_count_and_keep_the_last_ten_errors(tmp_path):
    folder = RunFolder(tmp_path)
    for k in range(12):
        folder.record_attempt("failures", f"error {k}")
    folder.record_attempt("preemptions", "lost")
    folder.mark_failed("gave up")
    attempts = folder.attempts()
    assert (attempts.failures, attempts.preemptions, attempts.failed) == (12, 1, "gave up")
    assert len(attempts.errors) == 10 and attempts.errors[-1] == {"kind": "preemptions", "error": "lost"}
    folder.clear_failed()
    assert folder.attempts().failed is None and folder.attempts().failures == 12


def test_the_tables_columns_are_the_records_fields():
    """runs.parquet's columns come from the run's records by name: every column but the row's own (its id, the
    fitted parameter count, the driver's counts and the record's format) is a field of ResultRecord."""
    own = {"run_id", "fit_params", "preemptions", "failures", "error", "record_format"}
    record = {f.name for f in dataclasses.fields(ResultRecord)}
    assert set(COLUMNS) - own <= record
    assert list(COLUMNS) == [f.name for f in dataclasses.fields(RunRow)]
