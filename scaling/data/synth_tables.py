"""Turn simulated chunks into MIMIC-IV tables (columns in MIMIC-IV's order and value formats).

Lab values are drawn here, vectorised over every row of a chunk: log value = log(center) +
spread * (patient offset + loadings . factors + noise). Each function returns polars frames of
strings exactly as the CSV will hold them.
"""

import math

import numpy as np
import polars as pl

from scaling.data.synth_codes import (
    BACKGROUND,
    CONDITIONS,
    DIAGNOSES,
    DRUGS,
    GENERAL_DRUGS,
    LAB_COMMENTS,
    PROBLEM_DRUGS,
    PROBLEM_PROCEDURES,
    PROCEDURES,
)
from scaling.data.synth_labs import (
    AXIS_NAMES,
    ITEM_INDEX,
    LAB_ITEMS,
    PANEL_NAMES,
    PANELS,
    axis_loadings,
    loading_matrix,
)
from scaling.data.synth_patients import FACTORS, HOUR, Chunk

# Column order of each MIMIC-IV table (v2.2 / v3.1).
COLUMNS: dict[str, tuple[str, ...]] = {
    "hosp/patients": ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"),
    "hosp/admissions": (
        "subject_id",
        "hadm_id",
        "admittime",
        "dischtime",
        "deathtime",
        "admission_type",
        "admit_provider_id",
        "admission_location",
        "discharge_location",
        "insurance",
        "language",
        "marital_status",
        "race",
        "edregtime",
        "edouttime",
        "hospital_expire_flag",
    ),
    "hosp/transfers": ("subject_id", "hadm_id", "transfer_id", "eventtype", "careunit", "intime", "outtime"),
    "hosp/labevents": (
        "labevent_id",
        "subject_id",
        "hadm_id",
        "specimen_id",
        "itemid",
        "order_provider_id",
        "charttime",
        "storetime",
        "value",
        "valuenum",
        "valueuom",
        "ref_range_lower",
        "ref_range_upper",
        "flag",
        "priority",
        "comments",
    ),
    "hosp/diagnoses_icd": ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"),
    "hosp/procedures_icd": ("subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"),
    "hosp/prescriptions": (
        "subject_id",
        "hadm_id",
        "pharmacy_id",
        "poe_id",
        "poe_seq",
        "order_provider_id",
        "starttime",
        "stoptime",
        "drug_type",
        "drug",
        "formulary_drug_cd",
        "gsn",
        "ndc",
        "prod_strength",
        "form_rx",
        "dose_val_rx",
        "dose_unit_rx",
        "form_val_disp",
        "form_unit_disp",
        "doses_per_24_hrs",
        "route",
    ),
    "icu/icustays": ("subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime", "los"),
    "oracle/admissions": (
        "subject_id",
        "hadm_id",
        "admittime",
        "risk_in_hospital_mortality",
        "risk_long_stay",
        "risk_abnormal_creatinine",
    ),
    "oracle/icustays": ("subject_id", "hadm_id", "stay_id", "intime", "risk_icu_mortality"),
    "oracle/conditions": ("subject_id", "condition", "onset"),
}
DICTIONARIES: dict[str, tuple[str, ...]] = {
    "hosp/d_labitems": ("itemid", "label", "fluid", "category"),
    "hosp/d_icd_diagnoses": ("icd_code", "icd_version", "long_title"),
    "hosp/d_icd_procedures": ("icd_code", "icd_version", "long_title"),
}
NOISE = 0.55  # sd of the per-draw lab noise, in units of each item's spread
MASK_RATE = 0.08  # numeric results de-identified to "___"
ERROR_RATE = 0.001
UPPER_LIMITS = {50963: 70000.0, 51516: 182.0, 50931: 1000.0}  # written as ">limit"
ABNORMAL_CREATININE = 1.3
_W = loading_matrix(FACTORS)
_AXIS_LOADINGS, _OWN_SHARE = axis_loadings()
_CENTER = np.array([i.center for i in LAB_ITEMS])
_SPREAD = np.array([i.spread for i in LAB_ITEMS])
_KIND = np.array([i.kind for i in LAB_ITEMS])
_DECIMALS = np.array([i.decimals for i in LAB_ITEMS])
_PANEL_FLAT = np.array([ITEM_INDEX[i] for name in PANEL_NAMES for i in PANELS[name]])
_PANEL_SIZE = np.array([len(PANELS[name]) for name in PANEL_NAMES])
_PANEL_START = np.concatenate([[0], np.cumsum(_PANEL_SIZE)[:-1]])
_PROVIDERS = tuple(f"P{n:05X}" for n in range(40_000, 40_500))
_TIME = "%Y-%m-%d %H:%M:%S"
_SECONDS_PER_DAY = 86_400


def _ts(days: np.ndarray | list) -> pl.Series:
    """Days since 1970 -> 'YYYY-MM-DD HH:MM:SS' strings, null where NaN."""
    arr = np.asarray(days, dtype=np.float64)
    # MIMIC-IV times are whole minutes.
    seconds = np.where(np.isnan(arr), 0, np.round(arr * 1440) * 60).astype(np.int64)
    out = pl.from_epoch(pl.Series(seconds), time_unit="s").dt.strftime(_TIME)
    return out.set(pl.Series(np.isnan(arr)), None) if np.isnan(arr).any() else out


def _strings(values: np.ndarray) -> pl.Series:
    """An object array of str/None as a polars string column."""
    return pl.Series(values.tolist(), dtype=pl.String)


def _date(days: np.ndarray | list) -> pl.Series:
    return _ts(days).str.slice(0, 10)


def _num_text(values: np.ndarray, decimals: np.ndarray) -> pl.Series:
    """Numbers as MIMIC writes them: rounded to the item's decimals, integers without a point."""
    v = pl.Series(values)
    d = pl.Series(decimals)
    frame = pl.DataFrame({"v": v, "d": d})
    expr = pl.when(pl.col("d") == 0).then(pl.col("v").round(0).cast(pl.Int64).cast(pl.String))
    for k in (1, 2, 3):
        expr = expr.when(pl.col("d") == k).then(pl.col("v").round(k).cast(pl.String))
    return frame.select(expr.alias("s"))["s"]


def lab_rows(chunk: Chunk, seed: int, chunk_index: int) -> tuple[pl.DataFrame, dict[int, float]]:
    """All lab rows of a chunk, and each admission's oracle risk of creatinine > 1.3 in (24 h, 72 h]."""
    rng = np.random.default_rng([seed, chunk_index, 2])
    panel = np.asarray(chunk.draw_panel)
    counts = _PANEL_SIZE[panel]
    draw = np.repeat(np.arange(len(panel)), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    item = _PANEL_FLAT[_PANEL_START[panel][draw] + within]
    keep = rng.random(len(item)) > 0.02  # a test of a panel is sometimes not run
    draw, item = draw[keep], item[keep]
    n = len(item)
    patient = np.asarray(chunk.draw_patient)[draw]
    factors = np.stack(chunk.draw_factors).astype(np.float32)
    mean_z = chunk.offsets[patient, item] + np.einsum("rk,rk->r", factors[draw], _W[item])
    # The draw's noise: its own per lab, and along the physiology its labs share (synth_labs.AXES), from a stream of
    # its own so that every other draw of the chunk is as before.
    along = np.random.default_rng([seed, chunk_index, 5]).standard_normal((len(panel), len(AXIS_NAMES)))
    shared = np.einsum("ra,ra->r", along[draw], _AXIS_LOADINGS[item])
    z = mean_z + NOISE * (_OWN_SHARE[item] * rng.standard_normal(n) + shared)
    kind = _KIND[item]
    value = np.where(kind == "linear", _CENTER[item] + _SPREAD[item] * z, _CENTER[item] * np.exp(_SPREAD[item] * z))
    value = np.where(item == ITEM_INDEX[50817], np.minimum(value, 100.0), value)
    decimals = _DECIMALS[item]
    scale = 10.0**decimals
    valuenum = np.round(value * scale) / scale  # the number as written, so the flag agrees with it
    text = _num_text(value, decimals).to_numpy().astype(object)
    numeric = np.isin(kind, ("log", "linear"))
    # Ordinal and text-only items.
    for idx in np.unique(item[~numeric]):
        spec = LAB_ITEMS[idx]
        rows = np.flatnonzero(item == idx)
        if spec.kind == "ordinal":
            level = np.searchsorted(1.0 + 0.7 * np.arange(len(spec.levels) - 1), z[rows])
            labels = np.array(spec.levels, dtype=object)[level]
        else:
            options = list(spec.effects)
            weights = np.array([spec.effects[o] for o in options])
            labels = np.array(options, dtype=object)[rng.choice(len(options), len(rows), p=weights / weights.sum())]
        text[rows] = labels
        valuenum[rows] = [float(x) if x.replace(".", "").isdigit() else np.nan for x in labels]
    # Below detection, above range, de-identified, error.
    lod = np.array([np.nan if i.lod is None else i.lod for i in LAB_ITEMS])[item]
    low = numeric & (value < lod)
    text[low] = np.char.add("<", lod[low].astype(str)).astype(object)
    upper = np.array([UPPER_LIMITS.get(i.itemid, np.inf) for i in LAB_ITEMS])[item]
    high = numeric & (value > upper)
    text[high] = np.array([f">{u:g}" for u in upper[high]], dtype=object)
    roll = rng.random(n)
    masked = numeric & (roll < MASK_RATE)
    text[masked] = "___"
    errored = numeric & (roll > 1 - ERROR_RATE)
    text[errored] = "ERROR"
    valuenum[low | high | masked | errored] = np.nan
    ref_lo = np.array([np.nan if i.ref_lo is None else i.ref_lo for i in LAB_ITEMS])[item]
    ref_hi = np.array([np.nan if i.ref_hi is None else i.ref_hi for i in LAB_ITEMS])[item]
    with np.errstate(invalid="ignore"):  # NaN compares False: no flag where there is no number
        out_of_range = np.where(numeric, (valuenum < ref_lo) | (valuenum > ref_hi), (kind == "ordinal") & (z > 1.0))
    abnormal = out_of_range | high
    ref_shown = numeric
    units = np.array([i.unit or "" for i in LAB_ITEMS], dtype=object)[item]
    tsh = item == ITEM_INDEX[50993]
    units[tsh & (rng.random(n) < 0.1)] = "uU/ML"  # the same item in another unit, as in MIMIC-IV
    comment_pick = rng.random(n) < 0.01
    comments = np.full(n, None, dtype=object)
    comments[comment_pick] = np.array(LAB_COMMENTS, dtype=object)[
        rng.integers(0, len(LAB_COMMENTS), comment_pick.sum())
    ]

    draw_time = np.asarray(chunk.draw_time)[draw]
    hadm_local = np.asarray(chunk.draw_hadm)[draw]
    hadm = np.where(hadm_local >= 0, 20_000_000 + chunk_index * 10_000 + hadm_local, -1)
    storetime = draw_time + rng.uniform(0.3, 4, n) * HOUR
    storetime[rng.random(n) < 0.01] = np.nan
    provider_pick = rng.integers(0, len(_PROVIDERS), n)
    provider = np.where(rng.random(n) < 0.4, np.array(_PROVIDERS, dtype=object)[provider_pick], None)
    priority = np.asarray(chunk.draw_priority, dtype=object)[draw]
    subject = np.array([p.subject_id for p in chunk.patients])[patient]
    specimen = chunk_index * 200_000 + draw

    def range_text(bound: np.ndarray) -> pl.Series:
        return _num_text(np.nan_to_num(bound), decimals).set(pl.Series(np.isnan(bound) | ~ref_shown), None)

    frame = pl.DataFrame(
        {
            "labevent_id": chunk_index * 1_000_000 + np.arange(n),
            "subject_id": subject,
            "hadm_id": pl.Series(hadm).set(pl.Series(hadm < 0), None),
            "specimen_id": specimen,
            "itemid": np.array([i.itemid for i in LAB_ITEMS])[item],
            "order_provider_id": _strings(provider),
            "charttime": _ts(draw_time),
            "storetime": _ts(storetime),
            "value": _strings(text),
            "valuenum": _strings(text).set(pl.Series(np.isnan(valuenum)), None),
            "valueuom": _strings(units).replace("", None),
            "ref_range_lower": range_text(ref_lo),
            "ref_range_upper": range_text(ref_hi),
            "flag": _strings(np.where(abnormal, "abnormal", None)),
            "priority": _strings(priority).replace("", None),
            "comments": _strings(comments),
        }
    )
    # Keep the file's order: by subject, then time (as MIMIC-IV is mostly grouped).
    frame = (
        frame.with_columns(_t=pl.Series(draw_time))
        .sort(["subject_id", "_t", "specimen_id"], maintain_order=True)
        .drop("_t")
    )
    frame = frame.with_columns(labevent_id=chunk_index * 1_000_000 + pl.int_range(pl.len()))

    # Oracle: P(some creatinine in (24 h, 72 h] after admission is > 1.3), from the latent means.
    risk: dict[int, float] = {}
    creat = np.flatnonzero((item == ITEM_INDEX[50912]) & (hadm_local >= 0))
    if creat.size:
        admit = np.array([a.admit for a in chunk.admissions])[hadm_local[creat]]
        since = draw_time[creat] - admit
        in_window = (since > 1.0) & (since <= 3.0)
        rows = creat[in_window]
        threshold = math.log(ABNORMAL_CREATININE / _CENTER[ITEM_INDEX[50912]]) / _SPREAD[ITEM_INDEX[50912]]
        p_high = 0.5 * np.array([math.erfc((threshold - m) / (NOISE * math.sqrt(2))) for m in mean_z[rows]])
        p_high *= 1 - MASK_RATE - ERROR_RATE
        log_none = pl.DataFrame({"h": hadm_local[rows], "l": np.log1p(-np.minimum(p_high, 1 - 1e-12))})
        for h, total in log_none.group_by("h").agg(pl.col("l").sum()).iter_rows():
            risk[int(h)] = 1.0 - math.exp(total)
    return frame, risk


def chunk_tables(chunk: Chunk, seed: int, chunk_index: int) -> dict[str, pl.DataFrame]:
    """Every table of one chunk as string frames."""
    rng = np.random.default_rng([seed, chunk_index, 3])
    labs, creat_risk = lab_rows(chunk, seed, chunk_index)
    tables: dict[str, dict[str, list]] = {
        name: {c: [] for c in cols} for name, cols in COLUMNS.items() if name != "hosp/labevents"
    }

    def add(name: str, *values) -> None:
        for column, value in zip(COLUMNS[name], values, strict=True):
            tables[name][column].append(value)

    for p in chunk.patients:
        group = f"{p.year_group_start} - {p.year_group_start + 2}"
        add("hosp/patients", p.subject_id, p.gender, p.anchor_age, p.anchor_year, group, p.dod)
        for i, name in enumerate(CONDITIONS):
            if p.present[i]:
                add("oracle/conditions", p.subject_id, name, p.onset[i])
    transfer_id = 30_000_000 + chunk_index * 20_000
    for a in chunk.admissions:
        p = chunk.patients[a.subject_index]
        sid = p.subject_id
        hadm = 20_000_000 + chunk_index * 10_000 + a.hadm_index
        ed_out = a.admit if a.ed_time is not None else None
        location = (
            "EMERGENCY ROOM"
            if a.ed_time is not None
            else str(
                rng.choice(
                    [
                        "PHYSICIAN REFERRAL",
                        "TRANSFER FROM HOSPITAL",
                        "WALK-IN/SELF REFERRAL",
                        "CLINIC REFERRAL",
                        "PROCEDURE SITE",
                    ]
                )
            )
        )
        add(
            "hosp/admissions",
            sid,
            hadm,
            a.admit,
            a.disch,
            a.disch if a.died else None,
            a.admission_type,
            _PROVIDERS[int(rng.integers(len(_PROVIDERS)))],
            location,
            a.discharge_location,
            p.insurance,
            p.language,
            p.marital or None,
            p.race,
            a.ed_time,
            ed_out,
            int(a.died),
        )
        add(
            "oracle/admissions",
            sid,
            hadm,
            a.admit,
            a.risk_mortality,
            a.risk_long_stay,
            creat_risk.get(a.hadm_index, 0.0),
        )
        # Transfers: ED, the ward, the ICU in between, and the discharge.
        if a.ed_time is not None:
            add("hosp/transfers", sid, None, transfer_id, "ED", "Emergency Department", a.ed_time, a.admit)
            transfer_id += 1
        ward_in = a.admit
        if a.icu_in is not None:
            add("hosp/transfers", sid, hadm, transfer_id, "admit", a.ward, a.admit, a.icu_in)
            add("hosp/transfers", sid, hadm, transfer_id + 1, "transfer", a.icu_unit, a.icu_in, a.icu_out)
            transfer_id += 2
            ward_in = a.icu_out
            stay = 30_000_000 + chunk_index * 10_000 + a.hadm_index
            add(
                "icu/icustays",
                sid,
                hadm,
                stay,
                a.icu_unit,
                a.icu_unit,
                a.icu_in,
                a.icu_out,
                round(a.icu_out - a.icu_in, 6),
            )
            add("oracle/icustays", sid, hadm, stay, a.icu_in, a.risk_mortality)
        if ward_in < a.disch:
            add(
                "hosp/transfers",
                sid,
                hadm,
                transfer_id,
                "admit" if a.icu_in is None else "transfer",
                a.ward,
                ward_in,
                a.disch,
            )
            transfer_id += 1
        add("hosp/transfers", sid, hadm, transfer_id, "discharge", None, a.disch, None)
        transfer_id += 1
        # Diagnoses: the problem first, severe-course codes, then active chronic and background conditions.
        v = a.icd_version
        pick = lambda entry: (entry[0], 9) if v == 9 else (entry[2], 10)  # noqa: E731
        codes = [pick(DIAGNOSES[a.problem][int(rng.integers(len(DIAGNOSES[a.problem])))])]
        if a.severity[1] > 1.2:
            codes.append(pick(DIAGNOSES["severe"][int(rng.integers(len(DIAGNOSES["severe"])))]))
        if a.problem in ("sepsis", "uti") and a.severity[0] > 0.8 and rng.random() < 0.5:
            codes.append(pick(DIAGNOSES["aki"][0]))
        for i, name in enumerate(CONDITIONS):
            if a.effects[i] > 0 and rng.random() < 0.85:
                codes.append(pick(DIAGNOSES[name][p.dx_choice[name]]))
        codes += [pick(BACKGROUND[b]) for b in p.background if rng.random() < 0.7]
        for seq, (code, version) in enumerate(dict.fromkeys(codes), start=1):
            add("hosp/diagnoses_icd", sid, hadm, seq, code, version)
        # Procedures.
        names = list(PROBLEM_PROCEDURES[a.problem])
        if a.icu_in is not None and a.severity[0] > 1.0:
            names += ["intubation", "ventilation", "central_line"]
        if a.effects[CONDITIONS.index("cancer")] > 0 and rng.random() < 0.2:
            names.append("chemo")
        if a.effects[CONDITIONS.index("liver")] > 0 and rng.random() < 0.3:
            names.append("paracentesis")
        seq = 0
        for name in dict.fromkeys(names):
            if rng.random() < 0.75:
                seq += 1
                entry = PROCEDURES[name]
                day = a.admit + rng.uniform(0, max(a.disch - a.admit, 0.01))
                add("hosp/procedures_icd", sid, hadm, seq, day, entry[0] if v == 9 else entry[2], v)
        # Prescriptions.
        drugs = [d for d in GENERAL_DRUGS if rng.random() < 0.5]
        for i, name in enumerate(CONDITIONS):
            if a.effects[i] > 0:
                drugs += [d for d in p.drug_choice[name] if rng.random() < 0.8]
        drugs += [d for d in PROBLEM_DRUGS[a.problem] if rng.random() < 0.85]
        for k, drug in enumerate(dict.fromkeys(drugs)):
            strength, dose, unit, disp_unit, route, per_day = DRUGS[drug]
            start = a.admit + rng.uniform(0.5, 12) * HOUR
            start = min(start, a.disch - 0.1 * HOUR)
            stop = start + rng.uniform(0.2, 1.0) * max(a.disch - start, 0.05)
            gsn = f"{(sum(map(ord, drug)) * 7919) % 90000 + 10000:06d}"
            ndc = f"{(sum(map(ord, drug)) * 104729) % 10**11:011d}"
            add(
                "hosp/prescriptions",
                sid,
                hadm,
                chunk_index * 1_000_000 + a.hadm_index * 100 + k,
                f"{sid}-{a.hadm_index * 100 + k + 1}",
                a.hadm_index * 100 + k + 1,
                _PROVIDERS[int(rng.integers(len(_PROVIDERS)))],
                start,
                stop,
                "MAIN",
                drug,
                drug.split()[0][:6].upper() + str(len(drug)),
                gsn,
                ndc,
                strength,
                None,
                dose,
                unit,
                "1",
                disp_unit,
                per_day if per_day != "0" else None,
                route,
            )

    frames = {"hosp/labevents": labs}
    time_columns = {
        "admittime",
        "dischtime",
        "deathtime",
        "edregtime",
        "edouttime",
        "intime",
        "outtime",
        "starttime",
        "stoptime",
    }
    date_columns = {"dod", "chartdate"}
    for name, data in tables.items():
        columns = {}
        for column, values in data.items():
            if column in time_columns or (name == "oracle/conditions" and column == "onset"):
                arr = np.array([np.nan if x is None else x for x in values], dtype=np.float64)
                columns[column] = (
                    _ts(np.where(np.isinf(arr), np.nan, arr)) if len(arr) else pl.Series([], dtype=pl.String)
                )
            elif column in date_columns:
                arr = np.array([np.nan if x is None else x for x in values], dtype=np.float64)
                columns[column] = _date(arr) if len(arr) else pl.Series([], dtype=pl.String)
            else:
                columns[column] = (
                    pl.Series(values, dtype=pl.String, strict=False) if values else pl.Series([], dtype=pl.String)
                )
        frames[name] = pl.DataFrame(columns)
    return frames


def dictionary_tables() -> dict[str, pl.DataFrame]:
    """The d_ tables for every item and code the generator can write."""
    labs = pl.DataFrame(
        {
            "itemid": [i.itemid for i in LAB_ITEMS],
            "label": [i.label for i in LAB_ITEMS],
            "fluid": [i.fluid for i in LAB_ITEMS],
            "category": [i.category for i in LAB_ITEMS],
        }
    ).sort("itemid")
    dx = {(e[0], 9): e[1] for entries in DIAGNOSES.values() for e in entries} | {
        (e[2], 10): e[3] for entries in DIAGNOSES.values() for e in entries
    }
    dx |= {(e[0], 9): e[1] for e in BACKGROUND} | {(e[2], 10): e[3] for e in BACKGROUND}
    px = {(e[0], 9): e[1] for e in PROCEDURES.values()} | {(e[2], 10): e[3] for e in PROCEDURES.values()}

    def table(entries: dict) -> pl.DataFrame:
        rows = sorted(entries.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        return pl.DataFrame(
            {
                "icd_code": [k[0] for k, _ in rows],
                "icd_version": [k[1] for k, _ in rows],
                "long_title": [v for _, v in rows],
            }
        )

    return {"hosp/d_labitems": labs, "hosp/d_icd_diagnoses": table(dx), "hosp/d_icd_procedures": table(px)}
