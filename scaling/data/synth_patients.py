"""The latent patient model behind the synthetic MIMIC-IV: conditions, admissions, outcomes, lab draws.

Each patient carries ten chronic conditions with onsets over the years and a per-patient severity,
a frailty, a personal offset for every lab, and fixed choices of codes and drugs. Admissions follow
the condition burden; each has an acute problem and a daily severity trajectory that drive labs,
ICU stays, length of stay and death. Outcome probabilities are computed from the latent state at
24 h and kept as the oracle risks. Scalar logic uses `random.Random` (fast for scalars); lab values
are drawn later, vectorised, in `synth_tables`.
"""

import math
import random
from dataclasses import dataclass, field

import numpy as np

from scaling.data.synth_codes import BACKGROUND, CONDITION_DRUGS, CONDITIONS, DIAGNOSES, ICU_UNITS, PROBLEMS, WARDS
from scaling.data.synth_labs import AXIS_NAMES, LAB_ITEMS, PANEL_NAMES, axis_loadings

# Latent factors that lab values load on (see synth_labs): chronic conditions, acute severity, problems.
FACTORS: tuple[str, ...] = CONDITIONS + ("sev",) + PROBLEMS
N_COND = len(CONDITIONS)
SEV = N_COND
PROBLEM_OFFSET = N_COND + 1
HOUR = 1.0 / 24
_AXIS_LOADINGS, _OWN_SHARE = axis_loadings()

# Prevalence (logit at age 60), age slope per decade, and which earlier conditions raise the odds.
_PREVALENCE = {
    "htn": (-0.3, 0.5, {}),
    "dm": (-1.2, 0.3, {"htn": 0.6}),
    "copd": (-2.0, 0.4, {}),
    "cancer": (-2.0, 0.4, {}),
    "liver": (-2.4, 0.0, {}),
    "afib": (-2.2, 0.7, {"htn": 0.5}),
    "infx": (-2.3, 0.0, {"cancer": 1.0}),
    "hf": (-2.4, 0.6, {"htn": 0.7, "afib": 0.9, "dm": 0.4}),
    "ckd": (-2.2, 0.5, {"dm": 1.1, "htn": 0.7, "hf": 0.8}),
    "anemia": (-2.0, 0.3, {"ckd": 1.0, "cancer": 0.9, "liver": 0.9}),
}
# How much each condition adds to the burden that drives admissions and outcomes.
_BURDEN = np.array([0.15, 0.3, 0.5, 0.9, 0.8, 0.3, 0.5, 0.8, 0.6, 0.3])
# Severity bump on admission by acute problem.
_PROBLEM_SEV = {
    "sepsis": 0.9,
    "uti": -0.1,
    "aki": 0.4,
    "bleed": 0.5,
    "hf_exac": 0.4,
    "copd_exac": 0.4,
    "chest_pain": -0.4,
    "elective": -0.9,
}
_EMERGENCY_TYPES = (
    ("EW EMER.", 0.55),
    ("OBSERVATION ADMIT", 0.12),
    ("URGENT", 0.1),
    ("EU OBSERVATION", 0.1),
    ("DIRECT EMER.", 0.06),
    ("DIRECT OBSERVATION", 0.04),
    ("AMBULATORY OBSERVATION", 0.03),
)
_ELECTIVE_TYPES = (("ELECTIVE", 0.6), ("SURGICAL SAME DAY ADMISSION", 0.4))
_DISCHARGE = (
    ("HOME", 0.45),
    ("HOME HEALTH CARE", 0.25),
    ("SKILLED NURSING FACILITY", 0.14),
    ("REHAB", 0.08),
    ("CHRONIC/LONG TERM ACUTE CARE", 0.03),
    ("AGAINST ADVICE", 0.02),
    ("PSYCH FACILITY", 0.01),
    ("ACUTE HOSPITAL", 0.02),
)
PANEL_ID = {name: i for i, name in enumerate(PANEL_NAMES)}
MAX_DAYS = 40


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _choice(r: random.Random, options: tuple[tuple[str, float], ...]) -> str:
    return r.choices([o for o, _ in options], weights=[w for _, w in options])[0]


@dataclass
class Patient:
    """Latent state of one patient (never written except through its consequences)."""

    subject_id: int
    gender: str
    anchor_age: int
    anchor_year: int
    year_group_start: int
    start: float  # observation window, days since 1970-01-01
    end: float
    frailty: float
    present: np.ndarray  # bool [conditions]
    onset: np.ndarray  # days
    cond_sev: np.ndarray
    dx_choice: dict[str, int]
    drug_choice: dict[str, tuple[str, ...]]
    background: tuple[int, ...]
    insurance: str
    language: str
    marital: str
    race: str
    dod: float | None = None
    death_time: float | None = None

    def age_at(self, t: float) -> int:
        return self.anchor_age + int((1970 + t / 365.2425) - self.anchor_year)

    def effects(self, t: float) -> np.ndarray:
        """Chronic condition effects at time t: grow over four years after onset."""
        active = self.present & (self.onset <= t)
        years = np.clip((t - self.onset) / (4 * 365.0), 0.0, 1.0)
        return np.where(active, self.cond_sev * (0.5 + 0.5 * years), 0.0)

    def burden(self, t: float, effects: np.ndarray) -> float:
        return float(_BURDEN @ effects + 0.3 * self.frailty + 0.03 * (self.age_at(t) - 60))

    def icd_version(self, t: float) -> int:
        """MIMIC-IV switched to ICD-10 in October 2015 (real time, before the date shift)."""
        real_year = self.year_group_start + (1970 + t / 365.2425 - self.anchor_year)
        return 9 if real_year < 2015.75 else 10


@dataclass
class Admission:
    """One hospital admission with its latent course and oracle risks."""

    subject_index: int
    hadm_index: int
    admit: float
    disch: float
    admission_type: str
    problem: str
    severity: np.ndarray  # daily, day 0 = admission
    effects: np.ndarray
    burden: float
    died: bool
    discharge_location: str
    ed_time: float | None
    icu_in: float | None
    icu_out: float | None
    icu_unit: str | None
    ward: str
    risk_mortality: float
    risk_long_stay: float
    icd_version: int
    age: int


@dataclass
class Chunk:
    """Everything simulated for one chunk of patients; lab draws as flat arrays."""

    patients: list[Patient] = field(default_factory=list)
    admissions: list[Admission] = field(default_factory=list)
    draw_patient: list[int] = field(default_factory=list)
    draw_time: list[float] = field(default_factory=list)
    draw_hadm: list[int] = field(default_factory=list)  # admission index in chunk, -1 outpatient
    draw_panel: list[int] = field(default_factory=list)
    draw_priority: list[str] = field(default_factory=list)
    draw_factors: list[np.ndarray] = field(default_factory=list)
    offsets: np.ndarray | None = None  # [patients, items]


def _new_patient(r: random.Random, subject_id: int) -> Patient:
    age = int(min(max(r.gauss(58, 18), 18), 91))
    if age > 89:
        age = 91  # MIMIC-IV groups everyone over 89 at 91
    group_start = r.choice((2008, 2011, 2014, 2017, 2020))
    anchor_year = r.randint(2110, 2190)
    t_anchor = (anchor_year - 1970) * 365.2425
    start = t_anchor + r.uniform(-2, 1) * 365
    end = start + r.uniform(0.5, 8) * 365
    frailty = r.gauss(0, 1)
    present = np.zeros(len(CONDITIONS), dtype=bool)
    onset = np.full(len(CONDITIONS), np.inf)
    for i, name in enumerate(CONDITIONS):
        base, age_slope, parents = _PREVALENCE[name]
        logit = base + age_slope * (age - 60) / 10 + 0.3 * frailty
        logit += sum(w for p, w in parents.items() if present[CONDITIONS.index(p)])
        if r.random() < sigmoid(logit):
            present[i] = True
            # Most conditions are there before the record starts; the rest begin inside it.
            onset[i] = start - r.uniform(0, 10) * 365 if r.random() < 0.6 else r.uniform(start, end)
    dx_choice = {name: r.randrange(len(DIAGNOSES[name])) for name in CONDITIONS}
    drug_choice = {
        name: tuple(d for d in drugs if r.random() < 0.6) or drugs[:1] for name, drugs in CONDITION_DRUGS.items()
    }
    background = tuple(sorted(r.sample(range(len(BACKGROUND)), r.randint(0, 4))))
    return Patient(
        subject_id=subject_id,
        gender=r.choice("MF"),
        anchor_age=age,
        anchor_year=anchor_year,
        year_group_start=group_start,
        start=start,
        end=end,
        frailty=frailty,
        present=present,
        onset=onset,
        cond_sev=np.array([math.exp(r.gauss(0, 0.35)) for _ in CONDITIONS]),
        dx_choice=dx_choice,
        drug_choice=drug_choice,
        background=background,
        insurance="Medicare" if age >= 65 else _choice(r, (("Medicaid", 0.3), ("Other", 0.6), ("Private", 0.1))),
        language="ENGLISH" if r.random() < 0.9 else "?",
        marital=_choice(r, (("MARRIED", 0.45), ("SINGLE", 0.3), ("WIDOWED", 0.12), ("DIVORCED", 0.08), ("", 0.05))),
        race=_choice(
            r,
            (
                ("WHITE", 0.62),
                ("BLACK/AFRICAN AMERICAN", 0.15),
                ("HISPANIC/LATINO - PUERTO RICAN", 0.04),
                ("ASIAN", 0.04),
                ("OTHER", 0.05),
                ("UNKNOWN", 0.07),
                ("WHITE - OTHER EUROPEAN", 0.03),
            ),
        ),
    )


def _problem(r: random.Random, e: np.ndarray) -> str:
    c = {name: e[i] for i, name in enumerate(CONDITIONS)}
    weights = (
        1.0 + 2 * c["infx"] + c["cancer"] + 0.5 * c["dm"],
        1.0 + 0.8 * c["dm"] + 0.5 * c["infx"],
        0.5 + 1.5 * c["ckd"] + 0.5 * c["hf"],
        0.5 + 2 * c["liver"] + 0.8 * c["afib"] + 0.5 * c["anemia"] + 0.5 * c["cancer"],
        0.3 + 3 * c["hf"],
        0.3 + 3 * c["copd"],
        1.0 + 0.5 * c["htn"] + 0.5 * c["afib"],
        1.2,
    )
    return r.choices(PROBLEMS, weights=weights)[0]


def _simulate_admission(r: random.Random, p: Patient, pi: int, hi: int, admit: float) -> Admission:
    e = p.effects(admit)
    b = p.burden(admit, e)
    c = {name: e[i] for i, name in enumerate(CONDITIONS)}
    problem = _problem(r, e)
    elective = problem == "elective"
    sev0 = (
        -0.4
        + 0.3 * b
        + _PROBLEM_SEV[problem]
        + r.gauss(0, 0.9)
        # conditions that interact: cardiorenal, infection in the immunosuppressed, bleeding in cirrhosis
        + 0.5 * c["ckd"] * c["hf"]
        + 0.6 * c["infx"] * (problem == "sepsis")
        + 0.6 * c["liver"] * (problem == "bleed")
        + 0.4 * c["dm"] * (problem in ("sepsis", "uti"))
    )
    severity = np.empty(MAX_DAYS)
    severity[0] = sev0
    for d in range(1, MAX_DAYS):
        severity[d] = 0.7 * severity[d - 1] - 0.2 + r.gauss(0, 0.35)
    s1 = severity[1]
    age = p.age_at(admit)
    mu, sigma = (math.log(2.5) if elective else math.log(3.2)) + 0.35 * s1 + 0.1 * b, 0.55
    los = min(max(math.exp(mu + sigma * r.gauss(0, 1)), 0.15), MAX_DAYS - 1)
    risk_mortality = sigmoid(
        -4.0
        + 1.2 * s1
        + 0.3 * b
        + 0.04 * (age - 65)
        + 0.6 * c["ckd"] * c["hf"]
        + 0.6 * c["liver"] * (problem == "bleed")
        + 0.5 * c["infx"] * (problem == "sepsis")
        + 0.4 * c["cancer"]
    )
    died = r.random() < risk_mortality

    def tail(x: float) -> float:
        return 0.5 * math.erfc((math.log(x) - mu) / (sigma * math.sqrt(2)))

    risk_long_stay = tail(7.0) / max(tail(1.0), 1e-12)  # P(LOS > 7 d | still in at 24 h)
    disch = admit + los
    icu_in = icu_out = icu_unit = None
    if r.random() < sigmoid(-1.8 + 1.4 * sev0 + 0.2 * b - (1.0 if elective else 0.0)):
        start = admit + r.uniform(0.5, 6) * HOUR
        if start < disch - 2 * HOUR:
            icu_in = start
            stay = math.exp(math.log(2.2) + 0.3 * s1 + 0.5 * r.gauss(0, 1))
            icu_out = disch if died else min(icu_in + stay, disch - HOUR)
            icu_unit = r.choices(ICU_UNITS, weights=(0.35, 0.15, 0.15, 0.15, 0.12, 0.08))[0]
    if died:
        location = "DIED"
    elif b > 1.5 and r.random() < 0.15:
        location = "HOSPICE"
    else:
        location = _choice(r, _DISCHARGE)
    adm_type = _choice(r, _ELECTIVE_TYPES if elective else _EMERGENCY_TYPES)
    ed_time = (
        admit - r.uniform(2, 8) * HOUR if adm_type in ("EW EMER.", "EU OBSERVATION", "OBSERVATION ADMIT") else None
    )
    ward = "Surgery" if elective else r.choice(WARDS)
    return Admission(
        subject_index=pi,
        hadm_index=hi,
        admit=admit,
        disch=disch,
        admission_type=adm_type,
        problem=problem,
        severity=severity,
        effects=e,
        burden=b,
        died=died,
        discharge_location=location,
        ed_time=ed_time,
        icu_in=icu_in,
        icu_out=icu_out,
        icu_unit=icu_unit,
        ward=ward,
        risk_mortality=risk_mortality,
        risk_long_stay=risk_long_stay,
        icd_version=p.icd_version(admit),
        age=age,
    )


def _draw(chunk: Chunk, pi: int, t: float, hi: int, panel: str, priority: str, factors: np.ndarray) -> None:
    chunk.draw_patient.append(pi)
    chunk.draw_time.append(t)
    chunk.draw_hadm.append(hi)
    chunk.draw_panel.append(PANEL_ID[panel])
    chunk.draw_priority.append(priority)
    chunk.draw_factors.append(factors)


def _admission_labs(r: random.Random, chunk: Chunk, p: Patient, a: Admission) -> None:
    c = {name: bool(p.present[i] and p.onset[i] <= a.admit) for i, name in enumerate(CONDITIONS)}
    problem_index = PROBLEM_OFFSET + PROBLEMS.index(a.problem)
    stat = a.admission_type not in ("ELECTIVE", "SURGICAL SAME DAY ADMISSION")

    def factors(t: float) -> np.ndarray:
        f = np.zeros(len(FACTORS))
        f[:N_COND] = a.effects
        sev = a.severity[min(int(t - a.admit), MAX_DAYS - 1)]
        f[SEV] = sev
        f[problem_index] = min(max(0.6 + 0.4 * sev, 0.0), 2.0)
        return f

    def in_icu(t: float) -> bool:
        return a.icu_in is not None and a.icu_in <= t < a.icu_out

    end = a.disch
    # Admission labs, drawn within two hours of arrival.
    t = a.admit + r.uniform(0.3, 2) * HOUR
    if t < end:
        f = factors(t)
        prio = "STAT" if stat else "ROUTINE"
        odds = {
            "cbc": 0.97,
            "chem7": 0.97,
            "diff": 0.6,
            "camgp": 0.55,
            "lft": 0.25 + 0.5 * c["liver"],
            "coag": 0.25 + 0.5 * (c["liver"] or c["afib"]),
            "misc": 0.15,
            "hold": 0.3,
            "cardiac": 0.15 + 0.4 * c["hf"] + 0.6 * (a.problem in ("chest_pain", "hf_exac")),
            "urinalysis": 0.15 + 0.7 * (a.problem == "uti") + 0.3 * (a.problem == "sepsis"),
            "bloodgas": 0.8 if in_icu(t) else 0.08,
            "a1c": 0.2 * c["dm"],
        }
        for panel, odd in odds.items():
            if r.random() < odd:
                _draw(chunk, a.subject_index, t, a.hadm_index, panel, prio, f)
                if panel == "urinalysis" and r.random() < 0.7:
                    _draw(chunk, a.subject_index, t, a.hadm_index, "urine_micro", prio, f)
    # Morning labs each following day, blood gases while in the ICU.
    day = math.floor(a.admit) + 1
    while day < end:
        t = day + r.uniform(4.5, 6.5) * HOUR
        if t < end:
            f = factors(t)
            odds = {
                "cbc": 0.9,
                "chem7": 0.9,
                "camgp": 0.6,
                "diff": 0.3,
                "lft": 0.1 + 0.3 * c["liver"],
                "coag": 0.15 + 0.4 * (c["liver"] or c["afib"]),
                "misc": 0.05,
                "cardiac": 0.3 if (a.problem == "hf_exac" and day - a.admit < 2) else 0.02,
            }
            for panel, odd in odds.items():
                if r.random() < odd:
                    _draw(chunk, a.subject_index, t, a.hadm_index, panel, "ROUTINE" if r.random() < 0.9 else "", f)
        if a.icu_in is not None:
            for _ in range(1 + int(r.expovariate(1.0))):
                tg = day + r.uniform(0, 24) * HOUR
                if in_icu(tg) and tg < end:
                    _draw(chunk, a.subject_index, tg, a.hadm_index, "bloodgas", "STAT", factors(tg))
        day += 1


def _outpatient_labs(
    r: random.Random, chunk: Chunk, p: Patient, pi: int, busy: list[tuple[float, float]], stop: float
) -> None:
    n_active = int(p.present.sum())
    rate = 0.8 + 0.7 * n_active  # visits per year
    n = np.random.default_rng(r.getrandbits(32)).poisson(rate * (p.end - p.start) / 365)
    for _ in range(n):
        t = math.floor(r.uniform(p.start, p.end)) + r.uniform(8, 16) * HOUR
        if t >= stop or any(a - 1 <= t <= d + 1 for a, d in busy):
            continue
        e = p.effects(t)
        c = {name: bool(p.present[i] and p.onset[i] <= t) for i, name in enumerate(CONDITIONS)}
        f = np.zeros(len(FACTORS))
        f[:N_COND] = e
        f[SEV] = -0.6 + 0.15 * p.burden(t, e) + r.gauss(0, 0.3)
        odds = {
            "chem7": 0.85,
            "cbc": 0.75,
            "camgp": 0.2,
            "lft": 0.2 + 0.5 * c["liver"],
            "coag": 0.1 + 0.6 * c["afib"],
            "lipids": 0.15,
            "a1c": 0.1 + 0.5 * c["dm"],
            "urinalysis": 0.1,
            "misc": 0.1,
            "cardiac": 0.05 + 0.2 * c["hf"],
        }
        for panel, odd in odds.items():
            if r.random() < odd:
                _draw(chunk, pi, t, -1, panel, "ROUTINE" if r.random() < 0.7 else "", f)


def simulate_chunk(seed: int, chunk_index: int, first_subject: int, n_patients: int) -> Chunk:
    """Simulate patients first_subject .. first_subject + n_patients - 1, deterministically per (seed, chunk)."""
    state = np.random.SeedSequence([seed, chunk_index]).generate_state(2)
    r = random.Random(int(state[0]) << 32 | int(state[1]))
    chunk = Chunk()
    for pi in range(n_patients):
        p = _new_patient(r, 10_000_000 + first_subject + pi)
        chunk.patients.append(p)
        # Admissions: a Poisson number over the window, with readmissions after severe stays.
        b_mid = p.burden((p.start + p.end) / 2, p.effects((p.start + p.end) / 2))
        rate = min(max(0.35 * math.exp(0.5 * b_mid), 0.15), 5.0)
        count = max(1, int(np.random.default_rng(r.getrandbits(32)).poisson(rate * (p.end - p.start) / 365)))
        queue = sorted(r.uniform(p.start, p.end) for _ in range(count))
        busy: list[tuple[float, float]] = []
        last = -math.inf
        stop = math.inf
        while queue:
            admit = max(queue.pop(0), last + r.uniform(1, 4))
            if admit > p.end:
                break
            admit = math.floor(admit) + r.uniform(0, 24) * HOUR
            a = _simulate_admission(r, p, pi, len(chunk.admissions), admit)
            chunk.admissions.append(a)
            busy.append((a.admit, a.disch))
            _admission_labs(r, chunk, p, a)
            last = a.disch
            if a.died:
                stop = p.death_time = a.disch
                p.dod = a.disch
                break
            if r.random() < sigmoid(-2.2 + 0.5 * a.burden):
                queue.append(a.disch + r.expovariate(1 / 20))
                queue.sort()
            # Death after discharge: hazard per year from the burden (hospice: weeks).
            hazard = 6.0 if a.discharge_location == "HOSPICE" else 0.03 * math.exp(0.6 * a.burden + 0.04 * (a.age - 65))
            t_death = a.disch + r.expovariate(hazard) * 365
            horizon = max(queue[0], a.disch + 1) if queue else p.end  # the next admission, or the record's end
            if t_death < horizon:
                stop = p.death_time = t_death
                if t_death <= a.disch + 365:  # MIMIC-IV records out-of-hospital deaths up to a year after discharge
                    p.dod = t_death
                break
        _outpatient_labs(r, chunk, p, pi, busy, stop)
    # Each patient's baseline per lab: its own and along the shared physiology (hemoglobin and hematocrit together).
    offset_rng = np.random.default_rng([seed, chunk_index, 1])
    own = offset_rng.normal(0.0, 1.0, (n_patients, len(LAB_ITEMS)))
    along = offset_rng.normal(0.0, 1.0, (n_patients, len(AXIS_NAMES)))
    chunk.offsets = 0.45 * (own * _OWN_SHARE + along @ _AXIS_LOADINGS.T)
    return chunk
