"""The synthetic ICU tables (chartevents, inputevents, outputevents, procedureevents) from each stay's latent course.

A stay's vital signs follow its admission's acute severity hour by hour (the daily severity of the latent model,
interpolated between days, so the charts of the first day show where it is heading) and its problem: fever and a
fast pulse with sepsis, low blood pressure with sepsis and bleeding, fast breathing and low saturation with a COPD
exacerbation, an irregular rhythm with atrial fibrillation. Urine output falls with severity and kidney injury;
shock gets norepinephrine, sepsis and bleeding fluid boluses, a severe course an arterial line and a ventilator.
Charting density follows MIMIC-IV's ICU: vital signs hourly, temperature, GCS and rhythm every 4 h, urine every
2 h; the first `MAX_CHART_DAYS` days of a stay are charted.
"""

import numpy as np
import polars as pl

from scaling.data.synth_codes import CONDITIONS
from scaling.data.synth_patients import HOUR, MAX_DAYS, Admission, Chunk

MAX_CHART_DAYS = 7.0
AFIB, HTN, COPD, CKD = (CONDITIONS.index(c) for c in ("afib", "htn", "copd", "ckd"))

# Real MIMIC-IV ICU items (id, label, abbreviation, table, category, unit, type, low normal, high normal).
ITEMS = [
    (220045, "Heart Rate", "HR", "chartevents", "Routine Vital Signs", "bpm", "Numeric", 60, 100),
    (
        220179,
        "Non Invasive Blood Pressure systolic",
        "NBPs",
        "chartevents",
        "Routine Vital Signs",
        "mmHg",
        "Numeric",
        90,
        140,
    ),
    (
        220180,
        "Non Invasive Blood Pressure diastolic",
        "NBPd",
        "chartevents",
        "Routine Vital Signs",
        "mmHg",
        "Numeric",
        60,
        90,
    ),
    (
        220181,
        "Non Invasive Blood Pressure mean",
        "NBPm",
        "chartevents",
        "Routine Vital Signs",
        "mmHg",
        "Numeric",
        60,
        110,
    ),
    (220210, "Respiratory Rate", "RR", "chartevents", "Respiratory", "insp/min", "Numeric", 12, 20),
    (220277, "O2 saturation pulseoxymetry", "SpO2", "chartevents", "Respiratory", "%", "Numeric", 90, 100),
    (
        223761,
        "Temperature Fahrenheit",
        "Temperature F",
        "chartevents",
        "Routine Vital Signs",
        "°F",
        "Numeric",
        None,
        None,
    ),
    (220739, "GCS - Eye Opening", "GCS - Eye Opening", "chartevents", "Neurological", None, "Text", None, None),
    (223900, "GCS - Verbal Response", "GCS - Verbal Response", "chartevents", "Neurological", None, "Text", None, None),
    (223901, "GCS - Motor Response", "GCS - Motor Response", "chartevents", "Neurological", None, "Text", None, None),
    (220048, "Heart Rhythm", "Heart Rhythm", "chartevents", "Routine Vital Signs", None, "Text", None, None),
    (225158, "NaCl 0.9%", "NaCl 0.9%", "inputevents", "Fluids/Intake", "mL", "Solution", None, None),
    (221906, "Norepinephrine", "Norepinephrine", "inputevents", "Medications", "mg", "Solution", None, None),
    (226559, "Foley", "Foley", "outputevents", "Output", "mL", "Numeric", None, None),
    (
        224560,
        "Arterial Line",
        "Arterial Line",
        "procedureevents",
        "Access Lines - Invasive",
        "None",
        "Processes",
        None,
        None,
    ),
    (
        225792,
        "Invasive Ventilation",
        "Invasive Ventilation",
        "procedureevents",
        "Ventilation",
        "None",
        "Processes",
        None,
        None,
    ),
]
GCS_WORDS = {
    220739: ("None", "To Pain", "To Speech", "Spontaneously"),
    223900: ("No Response-ETT", "Incomprehensible sounds", "Inappropriate Words", "Confused", "Oriented"),
    223901: (
        "No response",
        "Abnormal extension",
        "Abnormal Flexion",
        "Flex-withdraws",
        "Localizes Pain",
        "Obeys Commands",
    ),
}


def severity_at(a: Admission, t: np.ndarray) -> np.ndarray:
    """The admission's acute severity at times t (days), linear between its daily values."""
    day = np.clip(t - a.admit, 0.0, MAX_DAYS - 1.001)
    whole = day.astype(int)
    frac = day - whole
    return a.severity[whole] * (1 - frac) + a.severity[whole + 1] * frac


def _stay_rows(a: Admission, rng: np.random.Generator) -> dict[str, list[dict]]:
    """One ICU stay's rows of the four tables: per table, pieces of columns (arrays of one length; times in days)."""
    end = min(a.icu_out, a.icu_in + MAX_CHART_DAYS)
    problem = a.problem
    sepsis, bleed, copd_exac, aki, uti = (problem == p for p in ("sepsis", "bleed", "copd_exac", "aki", "uti"))
    out: dict[str, list[dict]] = {"chart": [], "input": [], "output": [], "procedure": []}

    def chart(times: np.ndarray, item: int, values: np.ndarray, unit: str | None, numeric: bool = True) -> None:
        text = np.char.mod("%g", values) if numeric else np.asarray(values, dtype=str)
        out["chart"].append(
            {
                "charttime": times,
                "storetime": times,
                "itemid": np.full(len(times), str(item)),
                "value": text,
                "valuenum": text if numeric else np.full(len(times), None),
                "valueuom": np.full(len(times), unit),
            }
        )

    hourly = a.icu_in + (np.arange(max(1, int((end - a.icu_in) / HOUR))) + rng.uniform(0.05, 0.3)) * HOUR
    hourly = hourly[hourly < end]
    s = severity_at(a, hourly)
    n = len(hourly)
    since = hourly - a.admit
    heart = 78 + 9 * s + 14 * sepsis + 10 * bleed + 8 * (a.effects[AFIB] > 0) + rng.normal(0, 7, n)
    systolic = 124 - 9 * s - 14 * sepsis - 12 * bleed + 10 * (a.effects[HTN] > 0) + rng.normal(0, 10, n)
    diastolic = 0.5 * systolic + 12 + rng.normal(0, 6, n)
    breathing = 16 + 2.5 * s + 5 * copd_exac + 3 * sepsis + rng.normal(0, 2.5, n)
    saturation = 97 - 1.2 * np.maximum(s, 0) - 3 * copd_exac - 1.5 * (a.effects[COPD] > 0) + rng.normal(0, 1.2, n)
    chart(hourly, 220045, np.clip(heart, 30, 200).round(), "bpm")
    chart(hourly, 220179, np.clip(systolic, 50, 230).round(), "mmHg")
    chart(hourly, 220180, np.clip(diastolic, 25, 140).round(), "mmHg")
    chart(hourly, 220181, np.clip((systolic + 2 * diastolic) / 3, 35, 170).round(), "mmHg")
    chart(hourly, 220210, np.clip(breathing, 6, 50).round(), "insp/min")
    chart(hourly, 220277, np.clip(saturation, 70, 100).round(), "%")
    four = slice(0, None, 4)
    fever = (2.2 * sepsis + 1.0 * uti) * np.exp(-since[four] / 2)
    temperature = 98.4 + fever + 0.4 * np.maximum(s[four], 0) + rng.normal(0, 0.5, len(hourly[four]))
    chart(hourly[four], 223761, temperature.round(1), "°F")
    drowsy = np.maximum(s[four] - 0.5, 0)
    for item, words in GCS_WORDS.items():
        top = len(words)
        score = np.clip(np.round(top - (top / 3) * drowsy + rng.normal(0, 0.4, len(drowsy))), 1, top).astype(int)
        chart(hourly[four], item, np.array(words)[score - 1], None, numeric=False)
    rhythm = np.where(heart[four] > 100, "ST (Sinus Tachycardia)", "SR (Sinus Rhythm)")
    if a.effects[AFIB] > 0:
        rhythm = np.full(len(rhythm), "AF (Atrial Fibrillation)")
    chart(hourly[four], 220048, rhythm, None, numeric=False)

    two = slice(1, None, 2)
    urine = 140 - 36 * s[two] - 60 * aki - 30 * (a.effects[CKD] > 0) + rng.normal(0, 40, len(hourly[two]))
    out["output"].append(
        {
            "charttime": hourly[two],
            "storetime": hourly[two],
            "itemid": np.full(len(urine), "226559"),
            "value": np.char.mod("%g", np.clip(urine, 0, 900).round()),
            "valueuom": np.full(len(urine), "mL"),
        }
    )

    def given(item: int, start: float, stop: float, amount: float, unit: str, rate=None, rate_unit=None) -> None:
        row = {
            "starttime": start,
            "endtime": stop,
            "storetime": stop,
            "itemid": str(item),
            "amount": f"{amount:.4g}",
            "amountuom": unit,
            "rate": None if rate is None else f"{rate:.3g}",
            "rateuom": rate_unit,
        }
        out["input"].append({k: np.array([v]) for k, v in row.items()})

    s0 = a.severity[0]
    if sepsis or bleed or aki or rng.random() < 0.3:
        start = a.icu_in + rng.uniform(0.2, 2) * HOUR
        volume = 1000.0 if (sepsis or bleed) and s0 > 0.5 else 500.0 if (sepsis or bleed or aki) else 250.0
        given(225158, start, min(start + 0.5 * HOUR, end), volume, "mL")
    if (sepsis or bleed) and s0 > 0.8:  # shock: a vasopressor
        start = a.icu_in + rng.uniform(0.5, 4) * HOUR
        stop = min(start + rng.uniform(6, 48) * HOUR, end)
        if stop > start:
            rate = min(0.05 + 0.08 * s0, 0.5)  # mcg/kg/min, for 80 kg
            given(221906, start, stop, rate * 80 * (stop - start) * 1440 / 1000, "mg", rate, "mcg/kg/min")

    def procedure(item: int, start: float, stop: float) -> None:
        row = {"starttime": start, "endtime": stop, "storetime": stop, "itemid": str(item)}
        out["procedure"].append({k: np.array([v]) for k, v in row.items()})

    if rng.random() < (0.8 if s0 > 0.3 else 0.2):
        procedure(224560, a.icu_in + rng.uniform(0.2, 3) * HOUR, a.icu_out)
    if (copd_exac and s0 > 0.5) or s0 > 1.4:
        start = a.icu_in + rng.uniform(0.1, 2) * HOUR
        procedure(225792, start, min(start + rng.uniform(0.5, 5), a.icu_out))
    return out


TIME_COLUMNS = ("charttime", "storetime", "starttime", "endtime")
FIXED = {  # the columns every row of a table shares
    "icu/chartevents": {"warning": "0"},
    "icu/inputevents": {
        "ordercategoryname": "03-IV Fluid Bolus",
        "ordercomponenttypedescription": "Main order parameter",
        "ordercategorydescription": "Bolus",
        "patientweight": "80",
        "isopenbag": "0",
        "continueinnextdept": "0",
        "statusdescription": "FinishedRunning",
    },
    "icu/outputevents": {},
    "icu/procedureevents": {
        "value": "1",
        "valueuom": "None",
        "ordercategoryname": "Invasive Lines",
        "ordercategorydescription": "Task",
        "patientweight": "80",
        "isopenbag": "0",
        "continueinnextdept": "0",
        "statusdescription": "FinishedRunning",
    },
}
TABLE_OF = {
    "chart": "icu/chartevents",
    "input": "icu/inputevents",
    "output": "icu/outputevents",
    "procedure": "icu/procedureevents",
}


def icu_tables(chunk: Chunk, chunk_index: int, rng: np.random.Generator, columns: dict) -> dict[str, pl.DataFrame]:
    """The four ICU tables of a chunk's stays, with MIMIC-IV's columns (`columns`: table -> column names)."""
    pieces: dict[str, list[dict]] = {k: [] for k in TABLE_OF}
    for a in chunk.admissions:
        if a.icu_in is None:
            continue
        ids = {
            "subject_id": str(chunk.patients[a.subject_index].subject_id),
            "hadm_id": str(20_000_000 + chunk_index * 10_000 + a.hadm_index),
            "stay_id": str(30_000_000 + chunk_index * 10_000 + a.hadm_index),
        }
        for kind, parts in _stay_rows(a, rng).items():
            for part in parts:
                n = len(next(iter(part.values())))
                pieces[kind].append({**{k: np.full(n, v) for k, v in ids.items()}, **part})
    out = {}
    for kind, table in TABLE_OF.items():
        names = columns[table]
        if not pieces[kind]:
            out[table] = pl.DataFrame(schema={c: pl.String for c in names})
            continue
        data = {}
        height = sum(len(p["subject_id"]) for p in pieces[kind])
        for column in names:
            if column in pieces[kind][0]:
                values = np.concatenate([p[column] for p in pieces[kind]])
                data[column] = _stamp(values) if column in TIME_COLUMNS else pl.Series(values.tolist(), dtype=pl.String)
            else:
                data[column] = pl.Series([FIXED[table].get(column)] * height, dtype=pl.String)
        frame = pl.DataFrame(data)
        if kind == "input":
            frame = frame.with_columns(
                totalamount=pl.col("amount"),
                totalamountuom=pl.col("amountuom"),
                originalamount=pl.col("amount"),
                originalrate=pl.col("rate"),
            )
        out[table] = frame.select(names)
    return out


def _stamp(days: np.ndarray) -> pl.Series:
    """Times in days since 1970 as MIMIC-IV's text timestamps."""
    micros = (np.asarray(days, np.float64) * 86_400_000_000).astype(np.int64)
    return pl.Series(micros).cast(pl.Datetime("us")).dt.strftime("%Y-%m-%d %H:%M:%S")
