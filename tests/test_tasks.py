"""Task labels on hand-built timelines, including the edges; leakage; MEDS label form."""

import meds
import numpy as np
import polars as pl

from scaling.data.dataset import PreparedDataset
from scaling.data.tasks import TaskConfig, build_tasks
from scaling.data.timelines import tokenize
from tests.helpers import at, event_frame


def labels_of(rows):
    labels, exclusions = build_tasks(event_frame(rows).lazy(), TaskConfig())
    return {name: {(r[0], r[1]): r[2] for r in frame.iter_rows()} for name, frame in labels.items()}, exclusions


PRED = at(hours=24)


def test_hospital_tasks_and_their_edges():
    rows = [
        # 1: dies on day 5 of a 10-day stay: mortality and long stay.
        (1, at(), "HOSPITAL_ADMISSION//EW EMER.", None, None),
        (1, at(days=5), "MEDS_DEATH", None, None),
        (1, at(days=5), "HOSPITAL_DISCHARGE//DIED", None, None),
        # 2: discharged at 20 h: not in the cohort.
        (2, at(), "HOSPITAL_ADMISSION//EW EMER.", None, None),
        (2, at(hours=20), "HOSPITAL_DISCHARGE//HOME", None, None),
        # 3: dies exactly at the prediction time: excluded.
        (3, at(), "HOSPITAL_ADMISSION//EW EMER.", None, None),
        (3, at(hours=24), "MEDS_DEATH", None, None),
        (3, at(hours=24), "HOSPITAL_DISCHARGE//DIED", None, None),
        # 4: discharged exactly at the prediction time: excluded.
        (4, at(), "HOSPITAL_ADMISSION//URGENT", None, None),
        (4, at(hours=24), "HOSPITAL_DISCHARGE//HOME", None, None),
        # 5: a 3-day stay, alive; dies a month later at home: not an in-hospital death.
        (5, at(), "HOSPITAL_ADMISSION//URGENT", None, None),
        (5, at(days=3), "HOSPITAL_DISCHARGE//HOME", None, None),
        (5, at(days=30), "MEDS_DEATH", None, None),
    ]
    labels, exclusions = labels_of(rows)
    assert labels["in_hospital_mortality"] == {(1, PRED): True, (5, PRED): False}
    assert labels["long_stay"] == {(1, PRED): False, (5, PRED): False}  # 5 days and 3 days: neither over 7
    assert exclusions["in_hospital_mortality"] == {
        "discharged by the prediction time": 2,
        "died by the prediction time": 1,
    }


def test_long_stay_threshold():
    rows = [
        (1, at(), "HOSPITAL_ADMISSION//EW EMER.", None, None),
        (1, at(days=7, minutes=1), "HOSPITAL_DISCHARGE//HOME", None, None),
        (2, at(), "HOSPITAL_ADMISSION//EW EMER.", None, None),
        (2, at(days=7), "HOSPITAL_DISCHARGE//HOME", None, None),
    ]
    labels, _ = labels_of(rows)
    assert labels["long_stay"] == {(1, PRED): True, (2, PRED): False}


def test_icu_mortality_with_the_gap():
    rows = [
        (1, at(), "ICU_ADMISSION//MICU", None, None),
        (1, at(hours=30), "ICU_DISCHARGE", None, None),  # left within 48 h
        (2, at(), "ICU_ADMISSION//MICU", None, None),
        (2, at(days=4), "MEDS_DEATH", None, None),
        (2, at(days=4), "ICU_DISCHARGE", None, None),
        (3, at(), "ICU_ADMISSION//MICU", None, None),
        (3, at(hours=40), "MEDS_DEATH", None, None),
        (3, at(hours=40), "ICU_DISCHARGE", None, None),
        (4, at(), "ICU_ADMISSION//CCU", None, None),
        (4, at(days=3), "ICU_DISCHARGE", None, None),
        (4, at(days=9), "MEDS_DEATH", None, None),
    ]
    labels, exclusions = labels_of(rows)
    assert labels["icu_mortality"] == {(2, PRED): True, (4, PRED): False}  # 4 died after leaving the ICU
    assert exclusions["icu_mortality"] == {"died within the gap": 1, "left the ICU within the gap": 1}


def test_abnormal_creatinine_window_is_after_prediction_and_48h_long():
    stay = [
        (None, at(), "HOSPITAL_ADMISSION//EW EMER.", None, None),
        (None, at(days=10), "HOSPITAL_DISCHARGE//HOME", None, None),
    ]

    def subject(s, creatinine):
        return [(s, t, c, v, x) for _, t, c, v, x in stay] + [
            (s, t, "LAB//50912//mg/dL", v, None) for t, v in creatinine
        ]

    rows = (
        subject(1, [(at(hours=25), 1.5)])  # high inside the window
        + subject(2, [(PRED, 2.0), (at(hours=30), 1.0)])  # high exactly at the prediction time is not in the window
        + subject(3, [(at(hours=72), 1.4)])  # high at the window's end: in
        + subject(4, [(at(hours=73), 1.4)])  # after the window, no measurement inside: not in the cohort
        + subject(5, [(at(hours=10), 3.0), (at(hours=26), 1.3)])
    )  # 1.3 is not above 1.3
    labels, exclusions = labels_of(rows)
    assert labels["abnormal_creatinine"] == {(1, PRED): True, (2, PRED): False, (3, PRED): True, (5, PRED): False}
    assert exclusions["abnormal_creatinine"]["no creatinine in the window"] == 1


def test_written_labels_are_meds_labels(prepared):
    dataset = PreparedDataset.open(prepared[0])
    for name in ("in_hospital_mortality", "long_stay", "icu_mortality", "abnormal_creatinine"):
        frame = dataset.task(name)
        meds.LabelSchema.validate(frame.to_arrow())
        assert frame.height > 0 and 0 < frame["boolean_value"].mean() < 1
        assert frame.join(dataset.splits(), on="subject_id", how="anti").is_empty()


def test_changing_events_after_prediction_changes_no_input(prepared):
    """Leakage: everything at or after the prediction time can change; the tokens before it do not."""
    dataset = PreparedDataset.open(prepared[0])
    vocab = dataset.vocabulary()
    shard = pl.read_parquet(next((dataset.root / "events" / "data").glob("*.parquet")))
    task = dataset.task("in_hospital_mortality").join(shard.select("subject_id").unique(), on="subject_id").head(20)
    for subject, when, _ in task.iter_rows():
        events = shard.filter(pl.col("subject_id") == subject)
        later = pl.col("time") >= when
        altered = events.with_columns(
            numeric_value=pl.when(later).then(pl.col("numeric_value") * 3 + 1).otherwise("numeric_value"),
            code=pl.when(later & pl.col("code").str.starts_with("LAB//"))
            .then(pl.lit("MEDICATION//Heparin"))
            .otherwise("code"),
        )
        altered = pl.concat(
            [
                altered,
                pl.DataFrame(
                    {
                        "subject_id": [subject],
                        "time": [when],
                        "code": ["MEDS_DEATH"],
                        "numeric_value": [None],
                        "text_value": [None],
                        "hadm_id": [None],
                    },
                    schema=altered.schema,
                ),
            ]
        ).sort("time", nulls_last=False, maintain_order=True)
        cut = np.datetime64(when, "us").astype(np.int64)
        before = [tokenize(e.drop("hadm_id"), vocab) for e in (events, altered)]
        (t1, times1, *_), (t2, times2, *_) = before
        assert np.array_equal(t1[times1 < cut], t2[times2 < cut])
        assert not np.array_equal(t1, t2)
