"""The synthetic MIMIC-IV: MIMIC-IV's files and formats, determinism, and a credible latent structure."""

import gzip
import hashlib

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from scaling.data.synth_codes import CONDITIONS
from scaling.data.synth_labs import LAB_ITEMS
from scaling.data.synthetic import write_synthetic_mimic
from tests.helpers import read_csv_gz

# Column order of MIMIC-IV's files (shared/reference/mimic-iv-schema.md).
MIMIC_COLUMNS = {
    "hosp/patients": "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod",
    "hosp/admissions": "subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,"
    "admission_location,discharge_location,insurance,language,marital_status,race,edregtime,edouttime,"
    "hospital_expire_flag",
    "hosp/labevents": "labevent_id,subject_id,hadm_id,specimen_id,itemid,order_provider_id,charttime,storetime,"
    "value,valuenum,valueuom,ref_range_lower,ref_range_upper,flag,priority,comments",
    "hosp/d_labitems": "itemid,label,fluid,category",
    "hosp/diagnoses_icd": "subject_id,hadm_id,seq_num,icd_code,icd_version",
    "hosp/d_icd_diagnoses": "icd_code,icd_version,long_title",
    "hosp/procedures_icd": "subject_id,hadm_id,seq_num,chartdate,icd_code,icd_version",
    "hosp/d_icd_procedures": "icd_code,icd_version,long_title",
    "hosp/prescriptions": "subject_id,hadm_id,pharmacy_id,poe_id,poe_seq,order_provider_id,starttime,stoptime,"
    "drug_type,drug,formulary_drug_cd,gsn,ndc,prod_strength,form_rx,dose_val_rx,dose_unit_rx,form_val_disp,"
    "form_unit_disp,doses_per_24_hrs,route",
    "hosp/transfers": "subject_id,hadm_id,transfer_id,eventtype,careunit,intime,outtime",
    "icu/icustays": "subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,outtime,los",
    "hosp/omr": "subject_id,chartdate,seq_num,result_name,result_value",
    "icu/chartevents": "subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valuenum,valueuom,"
    "warning",
    "hosp/microbiologyevents": "microevent_id,subject_id,hadm_id,micro_specimen_id,order_provider_id,chartdate,"
    "charttime,spec_itemid,spec_type_desc,test_seq,storedate,storetime,test_itemid,test_name,org_itemid,org_name,"
    "isolate_num,quantity,ab_itemid,ab_name,dilution_text,dilution_comparison,dilution_value,interpretation,comments",
}
TIME = "%Y-%m-%d %H:%M:%S"


@pytest.mark.parametrize("name", sorted(MIMIC_COLUMNS))
def test_files_have_mimic_columns_in_order(synth, name):
    with gzip.open(synth / f"{name}.csv.gz", "rt") as handle:
        assert handle.readline().rstrip("\n") == MIMIC_COLUMNS[name]


def test_values_parse_with_mimic_types(synth):
    patients = read_csv_gz(synth, "hosp/patients")
    assert patients["subject_id"].cast(pl.Int64).is_between(10_000_000, 19_999_999).all()
    assert set(patients["gender"]) <= {"M", "F"}
    assert patients["anchor_age"].cast(pl.Int64).is_between(18, 91).all()
    assert patients["anchor_year_group"].str.contains(r"^\d{4} - \d{4}$").all()
    admissions = read_csv_gz(synth, "hosp/admissions")
    assert admissions["hadm_id"].cast(pl.Int64).is_between(20_000_000, 29_999_999).all()
    for column in ("admittime", "dischtime"):
        assert admissions[column].str.strptime(pl.Datetime, TIME, strict=True).null_count() == 0
    assert admissions["hospital_expire_flag"].is_in(["0", "1"]).all()
    labs = read_csv_gz(synth, "hosp/labevents")
    assert labs["charttime"].str.strptime(pl.Datetime, TIME, strict=True).dt.year().is_between(2100, 2210).all()
    assert labs["itemid"].cast(pl.Int64).is_between(50_000, 52_999).all()
    assert labs["valuenum"].drop_nulls().cast(pl.Float64, strict=True).is_finite().all()
    assert set(labs["flag"].drop_nulls()) == {"abnormal"}
    assert set(labs["priority"].drop_nulls()) <= {"ROUTINE", "STAT"}
    icu = read_csv_gz(synth, "icu/icustays")
    assert icu["los"].cast(pl.Float64).is_between(0, 60).all()


@pytest.mark.slow  # 40 s: three full synthetic datasets (the default suite keeps under 10 minutes on 2 cores)
def test_same_seed_same_bytes_different_seed_different(tmp_path):
    def digest(root):
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.csv.gz"))
        }

    write_synthetic_mimic(tmp_path / "a", 1200, seed=3, workers=1)
    write_synthetic_mimic(tmp_path / "b", 1200, seed=3, workers=2)
    write_synthetic_mimic(tmp_path / "c", 1200, seed=4, workers=1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["hosp/labevents.csv.gz"] != digest(tmp_path / "c")["hosp/labevents.csv.gz"]


def test_refuses_to_overwrite(synth):
    with pytest.raises(FileExistsError, match="not empty"):
        write_synthetic_mimic(synth, 10)


def test_lab_items_are_real_mimic_items(synth):
    items = read_csv_gz(synth, "hosp/d_labitems")
    assert items.height >= 60
    expected = {
        "50912": ("Creatinine", "mg/dL"),
        "51222": ("Hemoglobin", "g/dL"),
        "50983": ("Sodium", "mEq/L"),
        "51301": ("White Blood Cells", "K/uL"),
        "50813": ("Lactate", "mmol/L"),
    }
    labs = read_csv_gz(synth, "hosp/labevents")
    for itemid, (label, unit) in expected.items():
        assert items.filter(pl.col("itemid") == itemid)["label"].item() == label
        assert labs.filter(pl.col("itemid") == itemid)["valueuom"].mode().item() == unit
    assert labs["itemid"].n_unique() >= 60


def test_labs_come_in_panels(synth):
    labs = read_csv_gz(synth, "hosp/labevents")
    per_specimen = labs.group_by("specimen_id").agg(pl.col("charttime").n_unique().alias("times"), pl.len().alias("n"))
    assert (per_specimen["times"] == 1).all()  # one specimen, one time
    assert per_specimen["n"].mean() > 5
    cbc = labs.filter(pl.col("itemid").is_in(["51222", "51221", "51301"])).group_by("specimen_id").len()
    assert (cbc["len"] == 3).mean() > 0.8  # haemoglobin, haematocrit and WBC drawn together


def test_lab_value_formats_and_rates(synth):
    labs = read_csv_gz(synth, "hosp/labevents")
    assert 0.25 < labs["hadm_id"].is_null().mean() < 0.42  # about a third outpatient
    assert 0.10 < labs["valuenum"].is_null().mean() < 0.25  # about one in six without a number
    texts = set(labs.filter(pl.col("valuenum").is_null())["value"].drop_nulls())
    assert {"___", "NEG", "POS", "HOLD"} <= texts
    assert any(t.startswith("<") for t in texts) and any(t.startswith(">") for t in texts)
    comments = labs["comments"].drop_nulls()
    assert comments.str.contains(",").any() and comments.str.contains('"').any() and comments.str.contains("\n").any()


def test_flag_matches_reference_range(synth):
    labs = read_csv_gz(synth, "hosp/labevents").filter(
        pl.col("valuenum").is_not_null()
        & pl.col("ref_range_lower").is_not_null()
        & pl.col("ref_range_upper").is_not_null()
    )
    v, lo, hi = (labs[c].cast(pl.Float64) for c in ("valuenum", "ref_range_lower", "ref_range_upper"))
    outside = (v < lo) | (v > hi)
    assert ((labs["flag"] == "abnormal").fill_null(False) == outside).all()
    assert 0.05 < outside.mean() < 0.6


def test_icd_versions_follow_the_years(synth):
    dx = read_csv_gz(synth, "hosp/diagnoses_icd")
    assert set(dx["icd_version"]) == {"9", "10"}
    # ICD-10 codes start with a letter; ICD-9 codes with a digit, V or E.
    assert dx.filter(pl.col("icd_version") == "10")["icd_code"].str.contains(r"^[A-Z]").all()
    assert dx.filter(pl.col("icd_version") == "9")["icd_code"].str.contains(r"^[0-9VE]").all()
    titles = read_csv_gz(synth, "hosp/d_icd_diagnoses")
    assert dx.join(titles, on=["icd_code", "icd_version"], how="anti").is_empty()


def test_outcomes_are_consistent(synth):
    adm = read_csv_gz(synth, "hosp/admissions")
    died = adm["hospital_expire_flag"] == "1"
    assert (adm["deathtime"].is_not_null() == died).all()
    assert ((adm["discharge_location"] == "DIED") == died).all()
    assert 0.01 < died.mean() < 0.15
    patients = read_csv_gz(synth, "hosp/patients")
    deaths = adm.filter(died).select("subject_id", day=pl.col("deathtime").str.slice(0, 10))
    assert deaths.join(patients, on="subject_id")["dod"].eq(deaths["day"]).all()
    # Nothing happens after death.
    labs = read_csv_gz(synth, "hosp/labevents").join(patients.filter(pl.col("dod").is_not_null()), on="subject_id")
    assert (labs["charttime"].str.slice(0, 10) <= labs["dod"]).all()
    # At most one in-hospital death per subject, and it is their last admission.
    last = (
        adm.sort("admittime")
        .group_by("subject_id")
        .agg(pl.col("hospital_expire_flag").last(), pl.col("hospital_expire_flag").cast(pl.Int64).sum().alias("deaths"))
    )
    assert (last["deaths"] <= 1).all()
    assert last.filter(pl.col("deaths") == 1)["hospital_expire_flag"].eq("1").all()


def test_conditions_shape_labs_years_later(synth):
    """Kidney disease raises creatinine, and more so years after onset: a long-range dependency."""
    conditions = read_csv_gz(synth, "oracle/conditions")
    assert set(conditions["condition"]) == set(CONDITIONS) and len(CONDITIONS) >= 8
    ckd = conditions.filter(pl.col("condition") == "ckd").select(
        "subject_id", onset=pl.col("onset").str.strptime(pl.Datetime, TIME)
    )
    creat = (
        read_csv_gz(synth, "hosp/labevents")
        .filter((pl.col("itemid") == "50912") & pl.col("valuenum").is_not_null())
        .select(
            "subject_id", v=pl.col("valuenum").cast(pl.Float64), t=pl.col("charttime").str.strptime(pl.Datetime, TIME)
        )
    )
    with_ckd = creat.join(ckd, on="subject_id", how="left")
    before = with_ckd.filter(pl.col("onset").is_null() | (pl.col("t") < pl.col("onset")))["v"].median()
    after = with_ckd.filter(pl.col("t") >= pl.col("onset") + pl.duration(days=3 * 365))["v"].median()
    assert after > 1.8 * before


def test_oracle_risks_predict_outcomes(synth):
    """The oracle's risks separate the outcomes they predict (the best achievable AUROC is well above chance)."""
    oracle = read_csv_gz(synth, "oracle/admissions").join(
        read_csv_gz(synth, "hosp/admissions"), on=["subject_id", "hadm_id"]
    )
    died = oracle["hospital_expire_flag"].cast(pl.Int64).to_numpy()
    assert roc_auc_score(died, oracle["risk_in_hospital_mortality"].cast(pl.Float64).to_numpy()) > 0.75
    los = (
        oracle["dischtime"].str.strptime(pl.Datetime, TIME) - oracle["admittime"].str.strptime(pl.Datetime, TIME)
    ).dt.total_hours() / 24
    stayed = (los > 1).to_numpy()
    long_stay = (los > 7).to_numpy()[stayed]
    assert roc_auc_score(long_stay, oracle["risk_long_stay"].cast(pl.Float64).to_numpy()[stayed]) > 0.65
    risk = oracle["risk_abnormal_creatinine"].cast(pl.Float64).to_numpy()
    assert np.all((risk >= 0) & (risk <= 1)) and risk.max() > 0.5


def test_lab_catalog_is_consistent():
    assert len({i.itemid for i in LAB_ITEMS}) == len(LAB_ITEMS) >= 60
    for item in LAB_ITEMS:
        if item.ref_lo is not None and item.ref_hi is not None:
            assert item.ref_lo < item.ref_hi, item.label


def test_tables_only_the_reference_etl_reads_are_there_and_consistent(synth):
    """hosp/drgcodes, emar, hcpcsevents, omr, pharmacy and the ICU event tables (for mimic-iv-meds)."""
    from scaling.data.synth_extra import EXTRA_COLUMNS, EXTRA_DICTIONARIES

    for name, columns in {**EXTRA_COLUMNS, **EXTRA_DICTIONARIES}.items():
        with gzip.open(synth / f"{name}.csv.gz", "rt") as handle:
            assert handle.readline().rstrip("\n") == ",".join(columns), name
    admissions = set(read_csv_gz(synth, "hosp/admissions")["hadm_id"])
    stays = set(read_csv_gz(synth, "icu/icustays")["stay_id"])
    pharmacy_ids = set(read_csv_gz(synth, "hosp/prescriptions")["pharmacy_id"])
    for name in ("hosp/drgcodes", "hosp/hcpcsevents", "hosp/emar", "hosp/pharmacy"):
        table = read_csv_gz(synth, name)
        assert table.height > 0 and set(table["hadm_id"]) <= admissions, name
    assert set(read_csv_gz(synth, "hosp/emar")["pharmacy_id"]) <= pharmacy_ids
    items = set(read_csv_gz(synth, "icu/d_items")["itemid"])
    for name in ("icu/chartevents", "icu/inputevents", "icu/outputevents", "icu/procedureevents"):
        table = read_csv_gz(synth, name)
        assert table.height > 0 and set(table["stay_id"]) <= stays and set(table["itemid"]) <= items, name
        time = "charttime" if "charttime" in table.columns else "starttime"
        assert table[time].str.strptime(pl.Datetime, TIME, strict=True).null_count() == 0
    assert set(read_csv_gz(synth, "hosp/hcpcsevents")["hcpcs_cd"]) <= set(read_csv_gz(synth, "hosp/d_hcpcs")["code"])
    charts = read_csv_gz(synth, "icu/chartevents")
    numbers = charts["valuenum"].cast(pl.Float64, strict=False)
    assert (numbers.is_not_null() == charts["valuenum"].is_not_null()).all()  # every valuenum is a number
    texts = charts.filter(pl.col("valuenum").is_null())  # GCS words and the heart rhythm
    assert set(texts["itemid"]) == {"220739", "223900", "223901", "220048"} and texts["value"].null_count() == 0


def test_the_icu_charts_follow_the_latent_course(synth):
    """Stays of the admissions most likely to die chart a faster pulse, lower pressure and less urine in their
    first 24 h; sepsis and bleeding in shock get norepinephrine; emar's doses follow the prescriptions."""
    risk = read_csv_gz(synth, "oracle/admissions").select(
        "hadm_id", risk_mortality=pl.col("risk_in_hospital_mortality").cast(pl.Float64)
    )
    stays = read_csv_gz(synth, "icu/icustays").select(
        "hadm_id", intime=pl.col("intime").str.strptime(pl.Datetime, TIME)
    )
    charts = read_csv_gz(synth, "icu/chartevents").join(stays, on="hadm_id")
    first_day = charts.filter(
        pl.col("charttime").str.strptime(pl.Datetime, TIME) < pl.col("intime") + pl.duration(hours=24)
    )
    means = (
        first_day.filter(pl.col("valuenum").is_not_null())
        .group_by("hadm_id", "itemid")
        .agg(pl.col("valuenum").cast(pl.Float64).mean())
        .pivot(on="itemid", index="hadm_id", values="valuenum")
        .join(risk, on="hadm_id")
    )
    high = means.filter(pl.col("risk_mortality") > means["risk_mortality"].quantile(0.75))
    low = means.filter(pl.col("risk_mortality") < means["risk_mortality"].quantile(0.25))
    assert high["220045"].mean() > low["220045"].mean() + 8  # heart rate, bpm
    assert high["220179"].mean() < low["220179"].mean() - 6  # systolic pressure, mmHg
    urine = read_csv_gz(synth, "icu/outputevents").group_by("hadm_id").agg(pl.col("value").cast(pl.Float64).mean())
    urine = urine.join(risk, on="hadm_id")
    assert np.corrcoef(urine["value"], urine["risk_mortality"])[0, 1] < -0.2
    pressors = read_csv_gz(synth, "icu/inputevents").filter(pl.col("itemid") == "221906")
    assert pressors.height > 0 and set(pressors["rateuom"]) == {"mcg/kg/min"}
    emar = read_csv_gz(synth, "hosp/emar")
    assert set(emar["pharmacy_id"]) == set(read_csv_gz(synth, "hosp/prescriptions")["pharmacy_id"])
    assert 0.85 < (emar["event_txt"] == "Administered").mean() < 0.97
