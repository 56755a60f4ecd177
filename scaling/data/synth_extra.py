"""MIMIC-IV tables beyond the core eleven: hosp/drgcodes, emar, hcpcsevents, microbiologyevents, omr, pharmacy and
icu/chartevents, procedureevents, inputevents, outputevents (and the dictionaries d_hcpcs and d_items).

ehrscale reads all of them but hcpcsevents and pharmacy (`scaling.data.mimic_tables`); the reference `mimic-iv-meds`
ETL (benchmarks/compare_mimic_meds.py) reads all but microbiologyevents. They are written in MIMIC-IV v3.1's column
order from a chunk's admissions, prescriptions and latent state, from their own random streams: the core tables
are byte-identical with or without them. The ICU tables follow each stay's course (`scaling.data.synth_icu`);
microbiology follows the acute problem, omr the chronic conditions, emar the prescriptions; drgcodes,
hcpcsevents and pharmacy are plausible filler.
"""

import numpy as np
import polars as pl

from scaling.data.synth_codes import CONDITIONS
from scaling.data.synth_icu import ITEMS, icu_tables
from scaling.data.synth_patients import Chunk

EXTRA_COLUMNS: dict[str, tuple[str, ...]] = {
    "hosp/drgcodes": ("subject_id", "hadm_id", "drg_type", "drg_code", "description", "drg_severity", "drg_mortality"),
    "hosp/emar": (
        "subject_id",
        "hadm_id",
        "emar_id",
        "emar_seq",
        "poe_id",
        "pharmacy_id",
        "enter_provider_id",
        "charttime",
        "medication",
        "event_txt",
        "scheduletime",
        "storetime",
    ),
    "hosp/hcpcsevents": ("subject_id", "hadm_id", "chartdate", "hcpcs_cd", "seq_num", "short_description"),
    "hosp/microbiologyevents": (
        "microevent_id",
        "subject_id",
        "hadm_id",
        "micro_specimen_id",
        "order_provider_id",
        "chartdate",
        "charttime",
        "spec_itemid",
        "spec_type_desc",
        "test_seq",
        "storedate",
        "storetime",
        "test_itemid",
        "test_name",
        "org_itemid",
        "org_name",
        "isolate_num",
        "quantity",
        "ab_itemid",
        "ab_name",
        "dilution_text",
        "dilution_comparison",
        "dilution_value",
        "interpretation",
        "comments",
    ),
    "hosp/omr": ("subject_id", "chartdate", "seq_num", "result_name", "result_value"),
    "hosp/pharmacy": (
        "subject_id",
        "hadm_id",
        "pharmacy_id",
        "poe_id",
        "starttime",
        "stoptime",
        "medication",
        "proc_type",
        "status",
        "entertime",
        "verifiedtime",
        "route",
        "frequency",
        "disp_sched",
        "infusion_type",
        "sliding_scale",
        "lockout_interval",
        "basal_rate",
        "one_hr_max",
        "doses_per_24_hrs",
        "duration",
        "duration_interval",
        "expiration_value",
        "expiration_unit",
        "expirationdate",
        "dispensation",
        "fill_quantity",
    ),
    "icu/chartevents": (
        "subject_id",
        "hadm_id",
        "stay_id",
        "caregiver_id",
        "charttime",
        "storetime",
        "itemid",
        "value",
        "valuenum",
        "valueuom",
        "warning",
    ),
    "icu/procedureevents": (
        "subject_id",
        "hadm_id",
        "stay_id",
        "caregiver_id",
        "starttime",
        "endtime",
        "storetime",
        "itemid",
        "value",
        "valueuom",
        "location",
        "locationcategory",
        "orderid",
        "linkorderid",
        "ordercategoryname",
        "ordercategorydescription",
        "patientweight",
        "isopenbag",
        "continueinnextdept",
        "statusdescription",
        "originalamount",
        "originalrate",
    ),
    "icu/inputevents": (
        "subject_id",
        "hadm_id",
        "stay_id",
        "caregiver_id",
        "starttime",
        "endtime",
        "storetime",
        "itemid",
        "amount",
        "amountuom",
        "rate",
        "rateuom",
        "orderid",
        "linkorderid",
        "ordercategoryname",
        "secondaryordercategoryname",
        "ordercomponenttypedescription",
        "ordercategorydescription",
        "patientweight",
        "totalamount",
        "totalamountuom",
        "isopenbag",
        "continueinnextdept",
        "statusdescription",
        "originalamount",
        "originalrate",
    ),
    "icu/outputevents": (
        "subject_id",
        "hadm_id",
        "stay_id",
        "caregiver_id",
        "charttime",
        "storetime",
        "itemid",
        "value",
        "valueuom",
    ),
}
EXTRA_DICTIONARIES: dict[str, tuple[str, ...]] = {
    "hosp/d_hcpcs": ("code", "category", "long_description", "short_description"),
    "icu/d_items": (
        "itemid",
        "label",
        "abbreviation",
        "linksto",
        "category",
        "unitname",
        "param_type",
        "lownormalvalue",
        "highnormalvalue",
    ),
}

HCPCS = [
    ("99223", "Evaluation and Management", "Initial hospital care, per day, high severity", "Hospital care"),
    ("93010", "Medicine", "Electrocardiogram, interpretation and report", "Electrocardiogram report"),
    ("71045", "Radiology", "Radiologic examination, chest; single view", "Chest x-ray"),
]
DRGS = [
    ("871", "SEPTICEMIA OR SEVERE SEPSIS W/O MV >96 HOURS W MCC"),
    ("291", "HEART FAILURE AND SHOCK W MCC"),
    ("190", "CHRONIC OBSTRUCTIVE PULMONARY DISEASE W MCC"),
    ("683", "RENAL FAILURE W CC"),
    ("392", "ESOPHAGITIS, GASTROENT & MISC DIGEST DISORDERS W/O MCC"),
]

# Real MIMIC-IV microbiology names. Cultures: (spec_itemid, spec_type_desc, test_itemid, test_name).
CULTURES = {
    "blood": (70012, "BLOOD CULTURE", 90201, "Blood Culture, Routine"),
    "urine": (70079, "URINE", 90039, "URINE CULTURE"),
}
ORGANISMS = {  # (org_itemid, org_name) and the antibiotics tested on it
    "ecoli": (80002, "ESCHERICHIA COLI", ("AMPICILLIN", "CEFTRIAXONE", "CIPROFLOXACIN", "TRIMETHOPRIM/SULFA")),
    "kleb": (80004, "KLEBSIELLA PNEUMONIAE", ("CEFTRIAXONE", "CIPROFLOXACIN", "GENTAMICIN", "MEROPENEM")),
    "staph": (80023, "STAPH AUREUS COAG +", ("OXACILLIN", "VANCOMYCIN", "CLINDAMYCIN", "TETRACYCLINE")),
    "entero": (80053, "ENTEROCOCCUS SP.", ("AMPICILLIN", "VANCOMYCIN", "NITROFURANTOIN")),
}
ANTIBIOTIC_IDS = {
    name: 90000 + k for k, name in enumerate(sorted({a for _, _, tested in ORGANISMS.values() for a in tested}))
}
# Per acute problem: P(culture drawn) for blood and urine, P(it grows something), and which organisms grow.
MICRO_BY_PROBLEM = {
    "sepsis": ({"blood": 0.95, "urine": 0.5}, 0.55, ("ecoli", "staph", "kleb")),
    "uti": ({"blood": 0.3, "urine": 0.95}, 0.75, ("ecoli", "kleb", "entero")),
}
MICRO_OTHER = ({"blood": 0.15, "urine": 0.2}, 0.04, ("ecoli", "staph", "entero"))  # fever work-ups, contaminants
RESISTANT = 0.2  # share of tested antibiotics read R (else S; a few I)


def _blank(n: int) -> pl.Series:
    """An empty column (written as nothing between the commas, as MIMIC-IV's files have it)."""
    return pl.Series([None] * n, dtype=pl.String)


def _time(days: np.ndarray, fmt: str = "%Y-%m-%d %H:%M:%S") -> pl.Series:
    """Timestamps from MIMIC-style 'YYYY-MM-DD HH:MM:SS' strings shifted by `days` (days since epoch)."""
    return pl.Series((days * 86_400_000_000).astype(np.int64)).cast(pl.Datetime("us")).dt.strftime(fmt)


def _days(column: pl.Series) -> np.ndarray:
    parsed = column.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False)
    return parsed.dt.epoch("us").to_numpy().astype(np.float64) / 86_400_000_000


def extra_tables(frames: dict[str, pl.DataFrame], seed: int, chunk_index: int, chunk: Chunk) -> dict[str, pl.DataFrame]:
    """The extra tables of one chunk, from its admissions and prescriptions (string frames) and its latent state."""
    rng = np.random.default_rng([seed, chunk_index, 7])
    adm, rx = frames["hosp/admissions"], frames["hosp/prescriptions"]
    out: dict[str, pl.DataFrame] = {}
    n = adm.height
    admit = _days(adm["admittime"])
    pick = rng.integers(0, len(DRGS), n)
    out["hosp/drgcodes"] = pl.DataFrame(
        {
            "subject_id": adm["subject_id"],
            "hadm_id": adm["hadm_id"],
            "drg_type": pl.Series(["HCFA"] * n),
            "drg_code": pl.Series([DRGS[k][0] for k in pick]),
            "description": pl.Series([DRGS[k][1] for k in pick]),
            "drg_severity": _blank(n),
            "drg_mortality": _blank(n),
        }
    )
    hc = rng.integers(0, len(HCPCS), n)
    out["hosp/hcpcsevents"] = pl.DataFrame(
        {
            "subject_id": adm["subject_id"],
            "hadm_id": adm["hadm_id"],
            "chartdate": _time(admit, "%Y-%m-%d"),
            "hcpcs_cd": pl.Series([HCPCS[k][0] for k in hc]),
            "seq_num": pl.Series(["1"] * n),
            "short_description": pl.Series([HCPCS[k][3] for k in hc]),
        }
    )
    out["hosp/omr"] = _omr(chunk, np.random.default_rng([seed, chunk_index, 13]))
    m = rx.height
    out["hosp/emar"] = _emar(rx, np.random.default_rng([seed, chunk_index, 17]))
    blank = _blank(m)
    out["hosp/pharmacy"] = pl.DataFrame(
        {
            "subject_id": rx["subject_id"],
            "hadm_id": rx["hadm_id"],
            "pharmacy_id": rx["pharmacy_id"],
            "poe_id": rx["poe_id"],
            "starttime": rx["starttime"],
            "stoptime": rx["stoptime"],
            "medication": rx["drug"],
            "proc_type": pl.Series(["Unit Dose"] * m),
            "status": pl.Series(["Discontinued"] * m),
            "entertime": rx["starttime"],
            "verifiedtime": rx["starttime"],
            "route": rx["route"],
            "frequency": pl.Series(["Q24H"] * m),
            "disp_sched": blank,
            "infusion_type": blank,
            "sliding_scale": blank,
            "lockout_interval": blank,
            "basal_rate": blank,
            "one_hr_max": blank,
            "doses_per_24_hrs": rx["doses_per_24_hrs"],
            "duration": blank,
            "duration_interval": pl.Series(["Ongoing"] * m),
            "expiration_value": blank,
            "expiration_unit": blank,
            "expirationdate": blank,
            "dispensation": pl.Series(["Omnicell"] * m),
            "fill_quantity": blank,
        }
    )
    out.update(icu_tables(chunk, chunk_index, np.random.default_rng([seed, chunk_index, 19]), EXTRA_COLUMNS))
    problems = [a.problem for a in chunk.admissions]
    out["hosp/microbiologyevents"] = _microbiology(
        adm, problems, np.random.default_rng([seed, chunk_index, 11]), 1_000_000 + chunk_index * 100_000
    )
    return out


HTN, DM, HF, CANCER = (CONDITIONS.index(c) for c in ("htn", "dm", "hf", "cancer"))
EMAR_FATES = (("Administered", 0.92), ("Not Given", 0.05), ("Hold Dose", 0.03))
MAX_DOSES = 8  # administrations charted per prescription
OMR_GAP_DAYS = 120.0  # mean days between outpatient visits


def _omr(chunk: Chunk, rng: np.random.Generator) -> pl.DataFrame:
    """Outpatient visits over each patient's record, about every `OMR_GAP_DAYS` days from its start until its end or
    death (whatever the admissions: a visit must not tell of an admission to come), each with blood pressure,
    weight and BMI that follow the chronic conditions present on that day."""
    rows: dict[str, list] = {c: [] for c in EXTRA_COLUMNS["hosp/omr"]}
    for p in chunk.patients:
        last = min(p.end, p.death_time if p.death_time is not None else np.inf, p.dod if p.dod is not None else np.inf)
        visit = p.start + rng.exponential(OMR_GAP_DAYS)
        while visit < last:
            e = p.effects(visit) > 0
            systolic = 122 + 14 * e[HTN] + 4 * e[DM] + rng.normal(0, 12)
            diastolic = 76 + 6 * e[HTN] + rng.normal(0, 8)
            weight = max(90.0, 165 + 30 * e[DM] + 18 * e[HF] - 25 * e[CANCER] + rng.normal(0, 28))
            day = _time(np.array([visit]), "%Y-%m-%d")[0]
            results = (
                ("Blood Pressure", f"{systolic:.0f}/{diastolic:.0f}"),
                ("Weight (Lbs)", f"{weight:.1f}"),
                ("BMI (kg/m2)", f"{weight * 0.152 + rng.normal(0, 1.5):.1f}"),
            )
            for seq, (name, value) in enumerate(results, start=1):
                for column, cell in zip(rows, (str(p.subject_id), day, str(seq), name, value), strict=True):
                    rows[column].append(cell)
            visit += rng.exponential(OMR_GAP_DAYS)
    return pl.DataFrame({c: pl.Series(v, dtype=pl.String) for c, v in rows.items()})


def _emar(rx: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """Each prescription's doses as charted: one per 24 / doses_per_24_hrs hours from its start until its stop
    (at most MAX_DOSES), most administered, some not given or held."""
    start, stop = _days(rx["starttime"]), _days(rx["stoptime"])
    per_day = rx["doses_per_24_hrs"].cast(pl.Float64, strict=False).fill_null(1.0).clip(0.5, 24).to_numpy()
    doses = np.clip(np.floor((stop - start) * per_day), 1, MAX_DOSES).astype(int)
    which = np.repeat(np.arange(rx.height), doses)
    nth = np.arange(len(which)) - np.repeat(np.cumsum(doses) - doses, doses)
    given = start[which] + nth / per_day[which] + rng.uniform(0.0, 0.03, len(which))
    fate = rng.choice([f for f, _ in EMAR_FATES], len(which), p=[p for _, p in EMAR_FATES])
    picked = rx[which]
    return pl.DataFrame(
        {
            "subject_id": picked["subject_id"],
            "hadm_id": picked["hadm_id"],
            "emar_id": picked["subject_id"] + "-" + picked["poe_seq"] + "-" + pl.Series(nth.astype(str)),
            "emar_seq": pl.Series((nth + 1).astype(str)),
            "poe_id": picked["poe_id"],
            "pharmacy_id": picked["pharmacy_id"],
            "enter_provider_id": _blank(len(which)),
            "charttime": _time(given),
            "medication": picked["drug"],
            "event_txt": pl.Series(fate.astype(str)),
            "scheduletime": _time(given),
            "storetime": _time(given + 0.01),
        }
    )


def _microbiology(adm: pl.DataFrame, problems: list[str], rng: np.random.Generator, first_id: int) -> pl.DataFrame:
    """Cultures drawn in an admission's first hours, per its acute problem; a positive one has a row per antibiotic
    tested (organism, antibiotic, S/I/R), a negative one a single row without an organism. Results are stored
    1.5-3 days after the draw. Specimen and event ids count up from `first_id` (distinct per chunk)."""
    admit = _days(adm["admittime"])
    rows: dict[str, list] = {c: [] for c in EXTRA_COLUMNS["hosp/microbiologyevents"]}
    taken_days, stored_days = [], []
    specimen = first_id
    for k, problem in enumerate(problems):
        draw, positive, organisms = MICRO_BY_PROBLEM.get(problem, MICRO_OTHER)
        for kind, p in draw.items():
            if rng.random() >= p:
                continue
            specimen += 1
            taken = admit[k] + rng.uniform(0.02, 0.4)
            stored = taken + rng.uniform(1.5, 3.0)
            spec_item, spec_desc, test_item, test_name = CULTURES[kind]
            if rng.random() < positive:
                org_item, org_name, tested = ORGANISMS[organisms[rng.integers(len(organisms))]]
                reads = rng.choice(["S", "R", "I"], len(tested), p=[1 - RESISTANT - 0.03, RESISTANT, 0.03])
                results = [(str(org_item), org_name, ab, str(r)) for ab, r in zip(tested, reads, strict=True)]
            else:
                results = [(None, None, None, None)]
            for org_item, org_name, ab, read in results:
                values = {
                    "microevent_id": str(first_id + len(taken_days) + 1),
                    "subject_id": adm["subject_id"][k],
                    "hadm_id": adm["hadm_id"][k],
                    "micro_specimen_id": str(specimen),
                    "spec_itemid": str(spec_item),
                    "spec_type_desc": spec_desc,
                    "test_seq": "1",
                    "test_itemid": str(test_item),
                    "test_name": test_name,
                    "org_itemid": org_item,
                    "org_name": org_name,
                    "isolate_num": None if org_item is None else "1",
                    "ab_itemid": None if ab is None else str(ANTIBIOTIC_IDS[ab]),
                    "ab_name": ab,
                    "interpretation": read,
                }
                for column, cells in rows.items():
                    cells.append(values.get(column))
                taken_days.append(taken)
                stored_days.append(stored)
    frame = pl.DataFrame({c: pl.Series(v, dtype=pl.String) for c, v in rows.items()})
    if frame.height == 0:
        return frame
    taken, stored = np.array(taken_days), np.array(stored_days)
    return frame.with_columns(
        chartdate=_time(taken, "%Y-%m-%d") + " 00:00:00",
        charttime=_time(taken),
        storedate=_time(stored, "%Y-%m-%d") + " 00:00:00",
        storetime=_time(stored),
    )


def extra_dictionaries() -> dict[str, pl.DataFrame]:
    """d_hcpcs and icu/d_items for every code and item the extra tables use."""
    hcpcs = pl.DataFrame(
        {
            "code": [h[0] for h in HCPCS],
            "category": [h[1] for h in HCPCS],
            "long_description": [h[2] for h in HCPCS],
            "short_description": [h[3] for h in HCPCS],
        }
    )
    text = lambda v: None if v is None else str(v)  # noqa: E731
    items = pl.DataFrame({c: [text(i[k]) for i in ITEMS] for k, c in enumerate(EXTRA_DICTIONARIES["icu/d_items"])})
    return {"hosp/d_hcpcs": hcpcs, "icu/d_items": items}
