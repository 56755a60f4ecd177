"""Conditions, acute problems and the codes they leave (ICD-9/10 diagnoses and procedures, drugs).

ICD codes and titles are the real ones (dots removed, as MIMIC-IV writes them). Each chronic
condition and acute problem lists (icd9, icd10) diagnosis pairs; a patient keeps one fixed choice
per condition, so the same codes recur across their admissions.
"""

# Chronic conditions, in the order they are sampled (a condition may depend on earlier ones).
CONDITIONS: tuple[str, ...] = ("htn", "dm", "copd", "cancer", "liver", "afib", "infx", "hf", "ckd", "anemia")
CONDITION_NAMES = {
    "htn": "hypertension",
    "dm": "diabetes",
    "copd": "COPD",
    "cancer": "cancer",
    "liver": "liver disease",
    "afib": "atrial fibrillation",
    "infx": "infection-prone (immunosuppressed)",
    "hf": "heart failure",
    "ckd": "chronic kidney disease",
    "anemia": "anaemia",
}
# Acute reasons for an admission.
PROBLEMS: tuple[str, ...] = ("sepsis", "uti", "aki", "bleed", "hf_exac", "copd_exac", "chest_pain", "elective")

# code -> (icd9, icd9 title, icd10, icd10 title)
DIAGNOSES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "htn": (("4019", "Unspecified essential hypertension", "I10", "Essential (primary) hypertension"),),
    "dm": (
        (
            "25000",
            "Diabetes mellitus without mention of complication, type II or unspecified type, not stated as uncontrolled",
            "E119",
            "Type 2 diabetes mellitus without complications",
        ),
        (
            "25060",
            "Diabetes with neurological manifestations, type II or unspecified type, not stated as uncontrolled",
            "E1140",
            "Type 2 diabetes mellitus with diabetic neuropathy, unspecified",
        ),
        (
            "25040",
            "Diabetes with renal manifestations, type II or unspecified type, not stated as uncontrolled",
            "E1122",
            "Type 2 diabetes mellitus with diabetic chronic kidney disease",
        ),
    ),
    "copd": (
        (
            "496",
            "Chronic airway obstruction, not elsewhere classified",
            "J449",
            "Chronic obstructive pulmonary disease, unspecified",
        ),
    ),
    "cancer": (
        (
            "1629",
            "Malignant neoplasm of bronchus and lung, unspecified",
            "C3490",
            "Malignant neoplasm of unspecified part of unspecified bronchus or lung",
        ),
        (
            "1749",
            "Malignant neoplasm of breast (female), unspecified",
            "C50919",
            "Malignant neoplasm of unspecified site of unspecified female breast",
        ),
        ("1539", "Malignant neoplasm of colon, unspecified site", "C189", "Malignant neoplasm of colon, unspecified"),
        (
            "1977",
            "Secondary malignant neoplasm of liver",
            "C787",
            "Secondary malignant neoplasm of liver and intrahepatic bile duct",
        ),
    ),
    "liver": (
        ("5715", "Cirrhosis of liver without mention of alcohol", "K7469", "Other cirrhosis of liver"),
        ("5712", "Alcoholic cirrhosis of liver", "K7030", "Alcoholic cirrhosis of liver without ascites"),
        ("5723", "Portal hypertension", "K766", "Portal hypertension"),
    ),
    "afib": (
        ("42731", "Atrial fibrillation", "I4891", "Unspecified atrial fibrillation"),
        ("V5861", "Long-term (current) use of anticoagulants", "Z7901", "Long term (current) use of anticoagulants"),
    ),
    "infx": (
        ("V5865", "Long-term (current) use of steroids", "Z7952", "Long term (current) use of systemic steroids"),
        (
            "V1209",
            "Personal history of other infectious and parasitic diseases",
            "Z8619",
            "Personal history of other infectious and parasitic diseases",
        ),
    ),
    "hf": (
        ("4280", "Congestive heart failure, unspecified", "I509", "Heart failure, unspecified"),
        ("42832", "Chronic diastolic heart failure", "I5032", "Chronic diastolic (congestive) heart failure"),
        ("42822", "Chronic systolic heart failure", "I5022", "Chronic systolic (congestive) heart failure"),
    ),
    "ckd": (
        ("5859", "Chronic kidney disease, unspecified", "N189", "Chronic kidney disease, unspecified"),
        ("5853", "Chronic kidney disease, Stage III (moderate)", "N183", "Chronic kidney disease, stage 3 (moderate)"),
        (
            "40390",
            "Hypertensive chronic kidney disease, unspecified, with chronic kidney disease stage I through stage IV, or unspecified",
            "I129",
            "Hypertensive chronic kidney disease with stage 1 through stage 4 chronic kidney disease, or unspecified chronic kidney disease",
        ),
    ),
    "anemia": (
        ("2859", "Anemia, unspecified", "D649", "Anemia, unspecified"),
        (
            "2800",
            "Iron deficiency anemia secondary to blood loss (chronic)",
            "D500",
            "Iron deficiency anemia secondary to blood loss (chronic)",
        ),
        ("28521", "Anemia in chronic kidney disease", "D631", "Anemia in chronic kidney disease"),
    ),
    "sepsis": (
        ("0389", "Unspecified septicemia", "A419", "Sepsis, unspecified organism"),
        ("486", "Pneumonia, organism unspecified", "J189", "Pneumonia, unspecified organism"),
    ),
    "uti": (
        ("5990", "Urinary tract infection, site not specified", "N390", "Urinary tract infection, site not specified"),
    ),
    "aki": (("5849", "Acute kidney failure, unspecified", "N179", "Acute kidney failure, unspecified"),),
    "bleed": (
        (
            "5789",
            "Hemorrhage of gastrointestinal tract, unspecified",
            "K922",
            "Gastrointestinal hemorrhage, unspecified",
        ),
    ),
    "hf_exac": (
        (
            "42833",
            "Acute on chronic diastolic heart failure",
            "I5033",
            "Acute on chronic diastolic (congestive) heart failure",
        ),
    ),
    "copd_exac": (
        (
            "49121",
            "Obstructive chronic bronchitis with (acute) exacerbation",
            "J441",
            "Chronic obstructive pulmonary disease with (acute) exacerbation",
        ),
    ),
    "chest_pain": (("78650", "Chest pain, unspecified", "R079", "Chest pain, unspecified"),),
    "elective": (
        (
            "71536",
            "Osteoarthrosis, localized, not specified whether primary or secondary, lower leg",
            "M170",
            "Bilateral primary osteoarthritis of knee",
        ),
    ),
    # Codes that follow a severe course whatever the problem.
    "severe": (
        ("99592", "Severe sepsis", "R6520", "Severe sepsis without septic shock"),
        (
            "51881",
            "Acute respiratory failure",
            "J9600",
            "Acute respiratory failure, unspecified whether with hypoxia or hypercapnia",
        ),
        ("78552", "Septic shock", "R6521", "Severe sepsis with septic shock"),
    ),
}
# Background diagnoses with no effect on labs; each patient carries a fixed few.
BACKGROUND: tuple[tuple[str, str, str, str], ...] = (
    ("2724", "Other and unspecified hyperlipidemia", "E785", "Hyperlipidemia, unspecified"),
    ("53081", "Esophageal reflux", "K219", "Gastro-esophageal reflux disease without esophagitis"),
    (
        "311",
        "Depressive disorder, not elsewhere classified",
        "F329",
        "Major depressive disorder, single episode, unspecified",
    ),
    ("3051", "Tobacco use disorder", "F17210", "Nicotine dependence, cigarettes, uncomplicated"),
    ("V1582", "Personal history of tobacco use", "Z87891", "Personal history of nicotine dependence"),
    ("2449", "Unspecified acquired hypothyroidism", "E039", "Hypothyroidism, unspecified"),
    ("32723", "Obstructive sleep apnea (adult)(pediatric)", "G4733", "Obstructive sleep apnea (adult) (pediatric)"),
    (
        "41401",
        "Coronary atherosclerosis of native coronary artery",
        "I2510",
        "Atherosclerotic heart disease of native coronary artery without angina pectoris",
    ),
    ("2768", "Hypopotassemia", "E876", "Hypokalemia"),
    ("2761", "Hyposmolality and/or hyponatremia", "E871", "Hypo-osmolality and hyponatremia"),
    ("V4582", "Percutaneous transluminal coronary angioplasty status", "Z9861", "Coronary angioplasty status"),
    ("27800", "Obesity, unspecified", "E669", "Obesity, unspecified"),
    ("30000", "Anxiety state, unspecified", "F419", "Anxiety disorder, unspecified"),
    ("7242", "Lumbago", "M5450", "Low back pain, unspecified"),
)

# Procedures: (icd9 proc, title, icd10-pcs, title), keyed by what triggers them.
PROCEDURES: dict[str, tuple[str, str, str, str]] = {
    "central_line": (
        "3893",
        "Venous catheterization, not elsewhere classified",
        "02HV33Z",
        "Insertion of Infusion Device into Superior Vena Cava, Percutaneous Approach",
    ),
    "ventilation": (
        "9671",
        "Continuous invasive mechanical ventilation for less than 96 consecutive hours",
        "5A1935Z",
        "Respiratory Ventilation, Less than 24 Consecutive Hours",
    ),
    "intubation": (
        "9604",
        "Insertion of endotracheal tube",
        "0BH17EZ",
        "Insertion of Endotracheal Airway into Trachea, Via Natural or Artificial Opening",
    ),
    "dialysis": (
        "3995",
        "Hemodialysis",
        "5A1D70Z",
        "Performance of Urinary Filtration, Intermittent, Less than 6 Hours Per Day",
    ),
    "transfusion": (
        "9904",
        "Transfusion of packed cells",
        "30233N1",
        "Transfusion of Nonautologous Red Blood Cells into Peripheral Vein, Percutaneous Approach",
    ),
    "endoscopy": (
        "4513",
        "Other endoscopy of small intestine",
        "0DJ08ZZ",
        "Inspection of Upper Intestinal Tract, Via Natural or Artificial Opening Endoscopic",
    ),
    "paracentesis": (
        "5491",
        "Percutaneous abdominal drainage",
        "0W9G3ZZ",
        "Drainage of Peritoneal Cavity, Percutaneous Approach",
    ),
    "cardiac_cath": (
        "3722",
        "Left heart cardiac catheterization",
        "4A023N7",
        "Measurement of Cardiac Sampling and Pressure, Left Heart, Percutaneous Approach",
    ),
    "knee": (
        "8154",
        "Total knee replacement",
        "0SRD0JZ",
        "Replacement of Left Knee Joint with Synthetic Substitute, Open Approach",
    ),
    "chemo": (
        "9925",
        "Injection or infusion of cancer chemotherapeutic substance",
        "3E04305",
        "Introduction of Other Antineoplastic into Central Vein, Percutaneous Approach",
    ),
    "antibiotic_infusion": (
        "9921",
        "Injection of antibiotic",
        "3E03329",
        "Introduction of Other Anti-infective into Peripheral Vein, Percutaneous Approach",
    ),
}

# Drugs: name -> (prod_strength, dose_val_rx, dose_unit_rx, form_unit_disp, route, doses_per_24_hrs)
DRUGS: dict[str, tuple[str, str, str, str, str, str]] = {
    "Sevelamer CARBONATE": ("800 mg Tab", "800", "mg", "TAB", "PO", "3"),
    "Calcitriol": ("0.25mcg Capsule", "0.25", "mcg", "CAP", "PO", "1"),
    "Insulin": ("100 Units / mL - 10 mL Vial", "0", "UNIT", "VIAL", "SC", "4"),
    "MetFORMIN (Glucophage)": ("500 mg Tab", "500", "mg", "TAB", "PO/NG", "2"),
    "Glargine": ("100 Units / mL - 10mL Vial", "10", "UNIT", "VIAL", "SC", "1"),
    "Furosemide": ("40 mg Tab", "40", "mg", "TAB", "PO/NG", "1"),
    "Carvedilol": ("6.25 mg Tab", "6.25", "mg", "TAB", "PO/NG", "2"),
    "Lisinopril": ("10 mg Tab", "10", "mg", "TAB", "PO/NG", "1"),
    "Lactulose": ("30 mL Cup", "30", "mL", "UDCUP", "PO/NG", "3"),
    "Rifaximin": ("550 mg Tab", "550", "mg", "TAB", "PO/NG", "2"),
    "Spironolactone": ("25 mg Tab", "25", "mg", "TAB", "PO/NG", "1"),
    "Ferrous Sulfate": ("325 mg Tab", "325", "mg", "TAB", "PO/NG", "1"),
    "Epoetin Alfa": ("10,000 unit/mL Vial", "10000", "UNIT", "VIAL", "SC", "0"),
    "Albuterol 0.083% Neb Soln": ("2.5mg/3mL Neb", "1", "NEB", "VIAL", "IH", "6"),
    "Tiotropium Bromide": ("18 mcg Cap", "1", "CAP", "CAP", "IH", "1"),
    "PredniSONE": ("20 mg Tab", "40", "mg", "TAB", "PO/NG", "1"),
    "Ondansetron": ("4 mg Tab", "4", "mg", "TAB", "PO/NG", "3"),
    "Dexamethasone": ("4 mg Tab", "4", "mg", "TAB", "PO/NG", "2"),
    "OxyCODONE (Immediate Release)": ("5 mg Tab", "5", "mg", "TAB", "PO/NG", "6"),
    "Sulfameth/Trimethoprim DS": ("800mg-160mg Tab", "1", "TAB", "TAB", "PO/NG", "1"),
    "Acyclovir": ("400 mg Tab", "400", "mg", "TAB", "PO/NG", "2"),
    "amLODIPine": ("5 mg Tab", "5", "mg", "TAB", "PO/NG", "1"),
    "Hydrochlorothiazide": ("25 mg Tab", "25", "mg", "TAB", "PO/NG", "1"),
    "Apixaban": ("5 mg Tab", "5", "mg", "TAB", "PO/NG", "2"),
    "Metoprolol Tartrate": ("25 mg Tab", "25", "mg", "TAB", "PO/NG", "2"),
    "Warfarin": ("5 mg Tab", "5", "mg", "TAB", "PO/NG", "1"),
    "Vancomycin": ("1g Vial", "1000", "mg", "VIAL", "IV", "2"),
    "Piperacillin-Tazobactam": ("4.5 g Vial", "4.5", "g", "VIAL", "IV", "3"),
    "CefTRIAXone": ("1 gm Vial", "1", "g", "VIAL", "IV", "1"),
    "Norepinephrine": ("4 mg / 250 mL Bag", "0.06", "mcg/kg/min", "BAG", "IV DRIP", "0"),
    "Ciprofloxacin HCl": ("500 mg Tab", "500", "mg", "TAB", "PO/NG", "2"),
    "Pantoprazole": ("40 mg Vial", "40", "mg", "VIAL", "IV", "2"),
    "Octreotide Acetate": ("50 mcg/mL Vial", "50", "mcg", "VIAL", "IV", "3"),
    "MethylPREDNISolone Sodium Succ": ("125 mg Vial", "125", "mg", "VIAL", "IV", "2"),
    "Ipratropium-Albuterol Neb": ("3 mL Vial", "1", "NEB", "VIAL", "IH", "4"),
    "Sodium Chloride 0.9%": ("1000 mL Bag", "1000", "mL", "BAG", "IV", "0"),
    "Heparin": ("5000 Units / mL- 1mL Vial", "5000", "UNIT", "mL", "SC", "3"),
    "Sodium Chloride 0.9%  Flush": ("10 mL Syringe", "3", "mL", "SYR", "IV", "3"),
    "Acetaminophen": ("325 mg Tab", "650", "mg", "TAB", "PO/NG", "0"),
    "Docusate Sodium": ("100 mg Cap", "100", "mg", "CAP", "PO/NG", "2"),
    "Senna": ("8.6 mg Tab", "8.6", "mg", "TAB", "PO/NG", "2"),
    "Potassium Chloride": ("20 mEq Tab", "40", "mEq", "TAB", "PO/NG", "0"),
    "Bisacodyl": ("10 mg Suppository", "10", "mg", "SUPP", "PR", "1"),
    "Polyethylene Glycol": ("17 g Powder Packet", "17", "g", "PKT", "PO/NG", "1"),
    "Magnesium Sulfate": ("2 g / 50 mL Premix Bag", "2", "g", "BAG", "IV", "0"),
}
CONDITION_DRUGS: dict[str, tuple[str, ...]] = {
    "ckd": ("Sevelamer CARBONATE", "Calcitriol"),
    "dm": ("Insulin", "MetFORMIN (Glucophage)", "Glargine"),
    "hf": ("Furosemide", "Carvedilol", "Lisinopril"),
    "liver": ("Lactulose", "Rifaximin", "Spironolactone"),
    "anemia": ("Ferrous Sulfate", "Epoetin Alfa"),
    "copd": ("Albuterol 0.083% Neb Soln", "Tiotropium Bromide", "PredniSONE"),
    "cancer": ("Ondansetron", "Dexamethasone", "OxyCODONE (Immediate Release)"),
    "infx": ("Sulfameth/Trimethoprim DS", "Acyclovir"),
    "htn": ("amLODIPine", "Hydrochlorothiazide"),
    "afib": ("Apixaban", "Metoprolol Tartrate", "Warfarin"),
}
PROBLEM_DRUGS: dict[str, tuple[str, ...]] = {
    "sepsis": ("Vancomycin", "Piperacillin-Tazobactam"),
    "uti": ("CefTRIAXone", "Ciprofloxacin HCl"),
    "aki": ("Sodium Chloride 0.9%",),
    "bleed": ("Pantoprazole", "Octreotide Acetate"),
    "hf_exac": ("Furosemide",),
    "copd_exac": ("MethylPREDNISolone Sodium Succ", "Ipratropium-Albuterol Neb"),
    "chest_pain": ("Metoprolol Tartrate",),
    "elective": ("OxyCODONE (Immediate Release)",),
}
GENERAL_DRUGS: tuple[str, ...] = (
    "Heparin",
    "Sodium Chloride 0.9%  Flush",
    "Acetaminophen",
    "Docusate Sodium",
    "Senna",
    "Potassium Chloride",
    "Bisacodyl",
    "Polyethylene Glycol",
    "Magnesium Sulfate",
    "Ondansetron",
)
PROBLEM_PROCEDURES: dict[str, tuple[str, ...]] = {
    "sepsis": ("central_line", "antibiotic_infusion"),
    "uti": (),
    "aki": ("dialysis",),
    "bleed": ("endoscopy", "transfusion"),
    "hf_exac": ("cardiac_cath",),
    "copd_exac": (),
    "chest_pain": ("cardiac_cath",),
    "elective": ("knee",),
}

ICU_UNITS: tuple[str, ...] = (
    "Medical Intensive Care Unit (MICU)",
    "Medical/Surgical Intensive Care Unit (MICU/SICU)",
    "Cardiac Vascular Intensive Care Unit (CVICU)",
    "Coronary Care Unit (CCU)",
    "Surgical Intensive Care Unit (SICU)",
    "Trauma SICU (TSICU)",
)
WARDS: tuple[str, ...] = ("Medicine", "Med/Surg", "Medicine/Cardiology", "Surgery", "Hematology/Oncology", "Transplant")

LAB_COMMENTS: tuple[str, ...] = (
    "VERIFIED BY REPLICATE ANALYSIS.",
    'HEMOLYSIS FALSELY INCREASES THIS RESULT, "MODERATELY" HEMOLYZED',
    "___",
    "NOTIFIED ___ AT 08:15, READ BACK.",
    'Reference range, "adult": see ___, repeat advised',
    "LIPEMIC SPECIMEN, RESULT MAY BE AFFECTED.\nRECOMMEND REPEAT.",
)
