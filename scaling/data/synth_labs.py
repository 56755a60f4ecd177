"""Lab items and panels of the synthetic MIMIC-IV, with MIMIC-IV's real item ids, labels and units.

Ids, labels, fluids, categories and units are MIMIC-IV facts (from the public MIT-LCP concept map
`d_labitems_to_loinc.csv`). Reference ranges are typical adult ranges. `center`/`spread` set the
log-normal (or, for `linear` items, normal) value around the range; `effects` are the loadings,
in units of `spread`, on the latent factors of `synth_patients.FACTORS`.
"""

from dataclasses import dataclass

import numpy as np

# itemid | label | fluid | category | unit | ref_lo | ref_hi | center | spread | kind | decimals | lod | effects
# kind: log (log-normal), linear (normal), ordinal (text levels by z), text (fixed text)
# lod: lower limit of detection; below it the value is written as "<lod" with no valuenum
_TABLE = """
51221|Hematocrit|Blood|Hematology|%|36|48|39|0.10|log|1||anemia:-1.8 ckd:-0.7 cancer:-0.7 liver:-0.5 copd:+0.5 sev:-0.3 bleed:-1.5
51222|Hemoglobin|Blood|Hematology|g/dL|12|16|12.8|0.11|log|1||anemia:-1.8 ckd:-0.7 cancer:-0.7 liver:-0.5 copd:+0.5 sev:-0.3 bleed:-1.6
51279|Red Blood Cells|Blood|Hematology|m/uL|4.2|5.4|4.3|0.11|log|2||anemia:-1.6 ckd:-0.6 cancer:-0.6 liver:-0.6 sev:-0.3 bleed:-1.4
51250|MCV|Blood|Hematology|fL|82|98|90|0.05|log|0||anemia:-1.0 liver:+1.3
51248|MCH|Blood|Hematology|pg|27|32|30|0.06|log|1||anemia:-0.9 liver:+0.9
51249|MCHC|Blood|Hematology|g/dL|31|37|33|0.03|log|1||anemia:-0.6
51277|RDW|Blood|Hematology|%|10.5|15.5|13.8|0.09|log|1||anemia:+1.4 liver:+1.0 cancer:+0.6 ckd:+0.3
52172|RDW-SD|Blood|Hematology|fL|35.1|46.3|43|0.09|log|1||anemia:+1.2 liver:+1.1 cancer:+0.5
51265|Platelet Count|Blood|Hematology|K/uL|150|440|230|0.32|log|0||liver:-1.8 cancer:+0.4 sev:-0.5 sepsis:-0.8 infx:+0.2
51301|White Blood Cells|Blood|Hematology|K/uL|4.0|11.0|7.8|0.28|log|1||sev:+0.9 sepsis:+1.4 infx:+0.3 cancer:+0.2 copd:+0.3
51256|Neutrophils|Blood|Hematology|%|50|70|66|0.12|log|1||sev:+0.8 sepsis:+1.0
51244|Lymphocytes|Blood|Hematology|%|20|40|21|0.35|log|1||sev:-0.8 sepsis:-0.8 cancer:-0.5
51254|Monocytes|Blood|Hematology|%|2|8|7|0.28|log|1||sev:-0.2
51200|Eosinophils|Blood|Hematology|%|0|4|1.6|0.6|log|1||sev:-0.5 copd:+0.4
51146|Basophils|Blood|Hematology|%|0|1|0.4|0.5|log|1||
52075|Absolute Neutrophil Count|Blood|Hematology|K/uL|1.6|6.1|5.0|0.35|log|2||sev:+1.0 sepsis:+1.5
51133|Absolute Lymphocyte Count|Blood|Hematology|K/uL|1.2|3.7|1.5|0.4|log|2||sev:-0.8 cancer:-0.6
52074|Absolute Monocyte Count|Blood|Hematology|K/uL|0.2|0.95|0.55|0.35|log|2||sev:+0.2
52073|Absolute Eosinophil Count|Blood|Hematology|K/uL|0.04|0.54|0.12|0.7|log|2||copd:+0.4
52069|Absolute Basophil Count|Blood|Hematology|K/uL|0.01|0.08|0.03|0.5|log|2||
52135|Immature Granulocytes|Blood|Hematology|%|0|1|0.4|0.55|log|1||sev:+0.8 sepsis:+0.8
50912|Creatinine|Blood|Chemistry|mg/dL|0.5|1.2|0.9|0.22|log|1||ckd:+2.8 hf:+0.6 dm:+0.4 sev:+0.6 aki:+2.2 liver:+0.2
51006|Urea Nitrogen|Blood|Chemistry|mg/dL|6|20|15|0.32|log|0||ckd:+2.1 hf:+0.8 sev:+0.6 aki:+1.8 bleed:+1.0 liver:-0.3
50971|Potassium|Blood|Chemistry|mEq/L|3.3|5.1|4.2|0.09|log|1||ckd:+1.0 aki:+1.2 sev:+0.2
50983|Sodium|Blood|Chemistry|mEq/L|133|145|139|0.022|log|0||hf:-1.0 liver:-1.3 sev:-0.4 hf_exac:-0.8
50902|Chloride|Blood|Chemistry|mEq/L|96|108|102|0.03|log|0||sev:-0.2 copd:-0.6
50882|Bicarbonate|Blood|Chemistry|mEq/L|22|32|26|0.10|log|0||ckd:-1.1 copd:+1.2 sev:-0.8 sepsis:-0.8 aki:-0.6
50868|Anion Gap|Blood|Chemistry|mEq/L|8|20|14|0.18|log|0||ckd:+0.7 sev:+0.8 sepsis:+0.6 dm:+0.3
50931|Glucose|Blood|Chemistry|mg/dL|70|100|102|0.28|log|0||dm:+2.4 sev:+0.5 cancer:+0.2
50934|H|Blood|Chemistry|U|||8|0.9|log|0||sev:+0.3
51678|L|Blood|Chemistry|U|||6|0.7|log|0||dm:+0.6
50947|I|Blood|Chemistry|U|||2|0.8|log|0||liver:+2.0
50893|Calcium, Total|Blood|Chemistry|mg/dL|8.4|10.3|9.1|0.06|log|1||ckd:-0.8 cancer:+0.6 liver:-0.5 sev:-0.4
50960|Magnesium|Blood|Chemistry|mg/dL|1.6|2.6|2.0|0.10|log|1||ckd:+0.6
50970|Phosphate|Blood|Chemistry|mg/dL|2.7|4.5|3.5|0.18|log|1||ckd:+1.6 aki:+0.8
50861|Alanine Aminotransferase (ALT)|Blood|Chemistry|IU/L|0|40|24|0.55|log|0||liver:+1.5 sev:+0.4 hf:+0.3
50878|Asparate Aminotransferase (AST)|Blood|Chemistry|IU/L|0|40|27|0.55|log|0||liver:+1.8 sev:+0.5
50863|Alkaline Phosphatase|Blood|Chemistry|IU/L|35|105|80|0.38|log|0||liver:+1.5 cancer:+0.8
50885|Bilirubin, Total|Blood|Chemistry|mg/dL|0|1.5|0.6|0.55|log|1|0.2|liver:+2.1 sev:+0.4 sepsis:+0.4
50862|Albumin|Blood|Chemistry|g/dL|3.5|5.2|3.8|0.11|log|1||liver:-1.5 cancer:-1.0 sev:-0.9 ckd:-0.4
50883|Bilirubin, Direct|Blood|Chemistry|mg/dL|0|0.3|0.2|0.7|log|1|0.1|liver:+2.0
50976|Protein, Total|Blood|Chemistry|g/dL|6.4|8.3|6.8|0.09|log|1||liver:-0.5 cancer:+0.3
50954|Lactate Dehydrogenase (LD)|Blood|Chemistry|IU/L|94|250|200|0.33|log|0||cancer:+1.2 sev:+0.5 liver:+0.4
50956|Lipase|Blood|Chemistry|IU/L|0|60|30|0.55|log|0||
50993|Thyroid Stimulating Hormone|Blood|Chemistry|uIU/mL|0.27|4.2|1.8|0.6|log|2||
51003|Troponin T|Blood|Chemistry|ng/mL|0|0.01|0.015|1.1|log|2|0.01|hf:+1.0 ckd:+1.0 sev:+0.6 hf_exac:+1.2
50910|Creatine Kinase (CK)|Blood|Chemistry|IU/L|0|175|110|0.7|log|0||sev:+0.5
50911|Creatine Kinase, MB Isoenzyme|Blood|Chemistry|ng/mL|0|10|3|0.6|log|0|1|hf:+0.4 hf_exac:+0.6
50963|NTproBNP|Blood|Chemistry|pg/mL|0|353|250|1.1|log|0||hf:+2.0 ckd:+0.9 afib:+0.6 hf_exac:+1.2
50852|% Hemoglobin A1c|Blood|Chemistry|%|4|6|5.5|0.09|log|1||dm:+3.0
50907|Cholesterol, Total|Blood|Chemistry|mg/dL|0|199|180|0.2|log|0||dm:+0.3 liver:-0.4
50904|Cholesterol, HDL|Blood|Chemistry|mg/dL|35||50|0.25|log|0||dm:-0.6
50905|Cholesterol, LDL, Calculated|Blood|Chemistry|mg/dL|0|129|100|0.3|log|0||dm:+0.2
51000|Triglycerides|Blood|Chemistry|mg/dL|0|150|120|0.45|log|0||dm:+1.0
51274|PT|Blood|Hematology|sec|9.4|12.5|11.8|0.12|log|1||liver:+2.0 afib:+1.4 sev:+0.4 sepsis:+0.4
51237|INR(PT)|Blood|Hematology||0.9|1.1|1.1|0.15|log|1||liver:+2.0 afib:+1.5 sev:+0.4 sepsis:+0.4
51275|PTT|Blood|Hematology|sec|25|36.5|30|0.18|log|1||sev:+0.4 liver:+0.6 afib:+0.3
52033|Specimen Type|Blood|Blood Gas||||0|1|text|0||ART.:0.6 VEN.:0.35 MIX.:0.05
50820|pH|Blood|Blood Gas|units|7.35|7.45|7.39|0.0055|log|2||sev:-0.9 sepsis:-0.5 copd:-0.8 ckd:-0.3
50818|pCO2|Blood|Blood Gas|mm Hg|35|45|41|0.14|log|0||copd:+2.0 sev:-0.2
50821|pO2|Blood|Blood Gas|mm Hg|85|105|88|0.35|log|0||copd:-1.0 hf:-0.4 sev:-0.5
50802|Base Excess|Blood|Blood Gas|mEq/L|-2|3|0|2.8|linear|0||ckd:-0.7 sev:-1.0 sepsis:-0.8 copd:+1.0
50804|Calculated Total CO2|Blood|Blood Gas|mEq/L|21|30|25|0.11|log|0||ckd:-1.0 copd:+1.2 sev:-0.8
50813|Lactate|Blood|Blood Gas|mmol/L|0.5|2.0|1.3|0.38|log|1||sev:+1.4 sepsis:+1.5 liver:+0.6
50808|Free Calcium|Blood|Blood Gas|mmol/L|1.12|1.32|1.15|0.06|log|2||sev:-0.5 ckd:-0.4
50822|Potassium, Whole Blood|Blood|Blood Gas|mEq/L|3.3|5.1|4.1|0.09|log|1||ckd:+1.0 aki:+1.2
50809|Glucose|Blood|Blood Gas|mg/dL|70|105|118|0.28|log|0||dm:+2.0 sev:+0.5
50817|Oxygen Saturation|Blood|Blood Gas|%|95|100|95.5|0.025|log|0||copd:-1.2 hf:-0.5 sev:-0.6
51491|pH|Urine|Hematology|units|5|8|6.0|0.11|log|1||
51498|Specific Gravity|Urine|Hematology||1.001|1.035|1.015|0.006|log|3||aki:+0.4
51486|Leukocytes|Urine|Hematology||||0|1|ordinal|0||uti:+2.2 infx:+0.4 | NEG,TR,SM,MOD,LG
51487|Nitrite|Urine|Hematology||||0|1|ordinal|0||uti:+1.8 | NEG,POS
51466|Blood|Urine|Hematology||||0|1|ordinal|0||ckd:+0.6 uti:+0.8 afib:+0.4 | NEG,TR,SM,MOD,LG
51492|Protein|Urine|Hematology|mg/dL|||0|1|ordinal|0||ckd:+1.5 dm:+0.8 hf:+0.3 | NEG,TR,30,100,300
51478|Glucose|Urine|Hematology|mg/dL|||0|1|ordinal|0||dm:+2.0 | NEG,100,300,1000
51484|Ketone|Urine|Hematology|mg/dL|||0|1|ordinal|0||dm:+0.6 sev:+0.5 | NEG,TR,15,40,80
51514|Urobilinogen|Urine|Hematology|mg/dL|||0|1|ordinal|0||liver:+1.5 | NEG,1,2,4,8
51464|Bilirubin|Urine|Hematology|mg/dL|||0|1|ordinal|0||liver:+1.8 | NEG,SM,MOD,LG
51506|Urine Appearance|Urine|Hematology||||0|1|ordinal|0||uti:+1.2 | Clear,Hazy,Cloudy
51493|RBC|Urine|Hematology|#/hpf|0|2|1.5|1.0|log|0||ckd:+0.6 uti:+0.8
51516|WBC|Urine|Hematology|#/hpf|0|5|2|1.1|log|0||uti:+2.0 infx:+0.3
51463|Bacteria|Urine|Hematology||||0|1|ordinal|0||uti:+2.0 | NONE,FEW,MOD,MANY
51519|Yeast|Urine|Hematology||||0|1|ordinal|0||dm:+0.8 infx:+0.8 | NONE,FEW,MOD
51476|Epithelial Cells|Urine|Hematology|#/hpf|0|5|2|0.9|log|0||
50933|Green Top Hold (plasma)|Blood|Chemistry||||0|1|text|0||HOLD:1
50887|Blue Top Hold|Blood|Chemistry||||0|1|text|0||HOLD:1
"""

# Panels drawn together: one specimen_id, one charttime.
PANELS: dict[str, tuple[int, ...]] = {
    "cbc": (51221, 51222, 51279, 51250, 51248, 51249, 51277, 52172, 51265, 51301),
    "diff": (51256, 51244, 51254, 51200, 51146, 52075, 51133, 52074, 52073, 52069, 52135),
    "chem7": (50912, 51006, 50971, 50983, 50902, 50882, 50868, 50931, 50934, 51678, 50947),
    "camgp": (50893, 50960, 50970),
    "lft": (50861, 50878, 50863, 50885, 50862, 50883, 50976),
    "coag": (51274, 51237, 51275),
    "bloodgas": (52033, 50820, 50818, 50821, 50802, 50804, 50813, 50808, 50822, 50809, 50817),
    "cardiac": (51003, 50910, 50911, 50963),
    "lipids": (50907, 50904, 50905, 51000),
    "a1c": (50852,),
    "misc": (50954, 50956, 50993),
    "urinalysis": (51491, 51498, 51486, 51487, 51466, 51492, 51478, 51484, 51514, 51464, 51506),
    "urine_micro": (51493, 51516, 51463, 51519, 51476),
    "hold": (50933, 50887),
}
PANEL_NAMES: tuple[str, ...] = tuple(PANELS)


# Physiology shared by the labs of one draw, and by a patient's baseline, beyond the latent factors: axis -> {itemid:
# loading}. Real labs are redundant (hematocrit is about three hemoglobins, INR is a function of PT, urea and
# creatinine both follow filtration, sodium and chloride tonicity, AST and ALT hepatocellular injury): Labrador's
# masked-value task reads one lab from the others. An item's per-draw noise (and its patient offset) is
# sum_a loading_a x axis_a + sqrt(1 - sum_a loading_a^2) x its own, so its marginal spread is unchanged and two
# items on one axis correlate at the product of their loadings.
AXES: dict[str, dict[int, float]] = {
    "red_cell_mass": {51221: 0.97, 51222: 0.97, 51279: 0.9},
    "red_cell_size": {51250: 0.9, 51248: 0.85, 52172: 0.5},
    "red_cell_width": {51277: 0.85, 52172: 0.8},
    "neutrophils": {51301: 0.85, 52075: 0.95, 51256: 0.6, 52135: 0.4},
    "lymphocytes": {51244: 0.85, 51133: 0.85},
    "monocytes": {51254: 0.8, 52074: 0.8},
    "eosinophils": {51200: 0.85, 52073: 0.85},
    "basophils": {51146: 0.8, 52069: 0.8},
    "filtration": {50912: 0.85, 51006: 0.8, 50970: 0.6, 50971: 0.35},
    "potassium": {50971: 0.9, 50822: 0.9},
    "tonicity": {50983: 0.8, 50902: 0.8},
    "bicarbonate": {50882: 0.95, 50804: 0.95, 50802: 0.85, 50868: -0.5, 50820: 0.5},
    "carbon_dioxide": {50818: 0.9, 50820: -0.7},
    "glucose": {50931: 0.9, 50809: 0.9},
    "calcium": {50893: 0.7, 50808: 0.7, 50862: 0.5},
    "protein": {50862: 0.6, 50976: 0.8},
    "hepatocellular": {50861: 0.85, 50878: 0.85, 50954: 0.4},
    "cholestasis": {50885: 0.9, 50883: 0.9, 50863: 0.5, 50947: 0.8},
    "hemolysis": {50934: 0.8, 50971: 0.25, 50954: 0.5},
    "oxygenation": {50821: 0.85, 50817: 0.85},
    "lactate": {50813: 0.7, 50868: 0.6},
    "coagulation": {51274: 0.98, 51237: 0.98, 51275: 0.5},
    "cholesterol": {50907: 0.9, 50905: 0.85},
    "muscle": {50910: 0.7, 50911: 0.7, 51003: 0.4},
    "urine_infection": {51486: 0.7, 51487: 0.5, 51516: 0.7, 51463: 0.7},
    "urine_blood": {51466: 0.8, 51493: 0.8},
}
AXIS_NAMES: tuple[str, ...] = tuple(AXES)


@dataclass(frozen=True)
class LabItem:
    """One lab item: identity (real MIMIC-IV), reference range and how its value is generated."""

    itemid: int
    label: str
    fluid: str
    category: str
    unit: str | None
    ref_lo: float | None
    ref_hi: float | None
    center: float
    spread: float
    kind: str
    decimals: int
    lod: float | None
    effects: dict[str, float]
    levels: tuple[str, ...]


def _num(text: str) -> float | None:
    return float(text) if text else None


def _parse(table: str) -> tuple[LabItem, ...]:
    items = []
    for line in table.strip().splitlines():
        main, _, levels = line.partition(" | ")
        (itemid, label, fluid, category, unit, lo, hi, center, spread, kind, decimals, lod, effects) = main.split("|")
        parsed = {}
        for part in effects.split():
            key, value = part.rsplit(":", 1)
            parsed[key] = float(value)
        items.append(
            LabItem(
                itemid=int(itemid),
                label=label,
                fluid=fluid,
                category=category,
                unit=unit or None,
                ref_lo=_num(lo),
                ref_hi=_num(hi),
                center=float(center),
                spread=float(spread),
                kind=kind,
                decimals=int(decimals),
                lod=_num(lod),
                effects=parsed,
                levels=tuple(levels.strip().split(",")) if levels else (),
            )
        )
    return tuple(items)


LAB_ITEMS: tuple[LabItem, ...] = _parse(_TABLE)
ITEM_INDEX: dict[int, int] = {item.itemid: i for i, item in enumerate(LAB_ITEMS)}


def loading_matrix(factors: tuple[str, ...]) -> np.ndarray:
    """Loadings [items, factors] of every numeric or ordinal item on the latent factors."""
    matrix = np.zeros((len(LAB_ITEMS), len(factors)), dtype=np.float32)
    for i, item in enumerate(LAB_ITEMS):
        if item.kind == "text":
            continue
        for key, value in item.effects.items():
            matrix[i, factors.index(key)] = value
    return matrix


def axis_loadings() -> tuple[np.ndarray, np.ndarray]:
    """Loadings [items, axes] of every item on the shared physiology axes, and each item's own share
    sqrt(1 - sum of its squared loadings) [items]."""
    matrix = np.zeros((len(LAB_ITEMS), len(AXIS_NAMES)))
    for a, name in enumerate(AXIS_NAMES):
        for itemid, loading in AXES[name].items():
            matrix[ITEM_INDEX[itemid], a] = loading
    shared = np.sum(matrix**2, axis=1)
    if np.any(shared > 1):
        raise ValueError(f"items loading more than 1 in variance on the axes: {np.flatnonzero(shared > 1)}")
    return matrix, np.sqrt(1 - shared)
