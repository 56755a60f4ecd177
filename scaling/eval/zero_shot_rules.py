"""Zero-shot rules and settings: how a task's answer is read off a generated future (no JAX here).

A rule names the codes that are the task's outcome (regular expressions on the vocabulary's code tokens; with
`value_above`, only a value token of such a code whose quantile bin lies above the threshold), the codes that end a
future without it (discharge, death), and a horizon on the future's clock (read from its generated time-gap
tokens). With `horizon_is_outcome` the outcome is reaching the horizon before a stop code (a stay that lasts).
The built-in tasks' rules follow their label definitions in scaling.data.tasks (docs/evaluation.md says where a
rule can only approximate a label); a user's task gets one from a small TOML file:

    [tasks.my_readmission]
    outcome = ["^HOSPITAL_ADMISSION//"]
    stop = ["^MEDS_DEATH$"]
    horizon_hours = 720
"""

import math
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from scaling.data.tasks import HOSPITAL_STAY, ICU_STAY, TaskConfig

FUTURES = 16  # futures per prediction time (ETHOS used 20 for its MIMIC-IV tasks)
MAX_NEW_TOKENS = 256  # a future that has not ended by then counts as incomplete (no outcome)
ROWS = 1000  # held-out rows scored, a seeded sample (0: all)
RULES_FORMAT = 1  # the rules file's `format` (optional; a newer one is refused)
RUNS = ("every", "frontier")  # which runs of a sweep generate: each at its end, or each budget's lowest loss after all
DEATH = "^MEDS_DEATH$"
HOSPITAL_DISCHARGE = "^" + re.escape(HOSPITAL_STAY[1])
# MIMIC-IV's discharge_location DIED: its discharge token comes before MEDS_DEATH at the same time, so a death in
# hospital is that token (stopping at it would read every death as a discharge)
DIED_IN_HOSPITAL = HOSPITAL_DISCHARGE + "DIED$"
DISCHARGED_ALIVE = HOSPITAL_DISCHARGE + "(?!DIED$)"
ICU_DISCHARGE = "^" + re.escape(ICU_STAY[1])


class RuleError(ValueError):
    """A zero-shot rule that cannot be used; the message names the task and the field."""


@dataclass(frozen=True)
class Settings:
    """How many futures, how long, for how many rows, drawn how, and (in a sweep) for which runs."""

    futures: int = FUTURES
    max_new_tokens: int = MAX_NEW_TOKENS
    rows: int = ROWS
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0
    rules: str | None = None  # a rules file for tasks that are not built in
    runs: str = "every"  # "frontier": the sweep generates for each budget's lowest-loss run, once all are trained

    def __post_init__(self) -> None:
        if self.runs not in RUNS:
            raise RuleError(f"runs must be one of {', '.join(RUNS)}, got {self.runs!r}")
        if self.futures < 1:
            raise RuleError(f"futures must be at least 1, got {self.futures}")
        if self.max_new_tokens < 1:
            raise RuleError(f"max new tokens must be at least 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise RuleError(f"temperature must be positive, got {self.temperature}")
        if self.rows < 0 or self.top_k < 0:
            raise RuleError(f"rows and top_k must be 0 or more, got {self.rows} and {self.top_k}")


@dataclass(frozen=True)
class ZeroShotRule:
    """How one task is read off a future."""

    outcome: tuple[str, ...] = ()  # regexes: code tokens that are the outcome
    value_above: float | None = None  # the outcome is a value of an `outcome` code above this (its bin's middle)
    stop: tuple[str, ...] = ()  # regexes: code tokens that end a future without the outcome
    horizon_hours: float = math.inf  # a future ends when its clock reaches this
    horizon_is_outcome: bool = False  # reaching the horizon before a stop code is the outcome
    once: bool = False  # the outcome happens at most once (death): a history that holds it is refused
    note: str = ""  # where the rule only approximates the task's label

    def __post_init__(self) -> None:
        if self.horizon_is_outcome and self.outcome:
            raise RuleError("a rule whose outcome is reaching the horizon names no outcome codes")
        if self.horizon_is_outcome and not math.isfinite(self.horizon_hours):
            raise RuleError("a rule whose outcome is reaching the horizon needs a finite horizon_hours")
        if not self.horizon_is_outcome and not self.outcome:
            raise RuleError("a rule needs outcome codes (or horizon_is_outcome with a horizon)")
        if self.value_above is not None and not self.outcome:
            raise RuleError("value_above needs the outcome codes whose value it reads")
        if not self.horizon_hours > 0:
            raise RuleError(f"horizon_hours must be positive, got {self.horizon_hours}")
        for pattern in (*self.outcome, *self.stop):
            try:
                re.compile(pattern)
            except re.error as error:
                raise RuleError(f"{pattern!r} is not a regular expression: {error}") from None


def built_in_rules(config: TaskConfig) -> dict[str, ZeroShotRule]:
    """The built-in tasks' rules, from the task configuration the dataset was prepared with."""
    stay_left = config.long_stay_days * 24 - config.prediction_hours
    return {
        "in_hospital_mortality": ZeroShotRule(outcome=(DEATH, DIED_IN_HOSPITAL), stop=(DISCHARGED_ALIVE,), once=True),
        "long_stay": ZeroShotRule(
            stop=(HOSPITAL_DISCHARGE, DEATH),
            horizon_hours=stay_left,
            horizon_is_outcome=True,
            note=f"the stay lasts past {config.long_stay_days:g} days: no discharge or death in the {stay_left:g} h "
            "after the prediction time, on the clock of the generated time-gap tokens",
        ),
        "icu_mortality": ZeroShotRule(
            outcome=(DEATH, DIED_IN_HOSPITAL), stop=(ICU_DISCHARGE, DISCHARGED_ALIVE), once=True
        ),
        "abnormal_creatinine": ZeroShotRule(
            outcome=(config.creatinine_code,),
            value_above=config.creatinine_threshold,
            stop=(DEATH,),
            horizon_hours=config.creatinine_window_hours,
            note="the label exists only where creatinine was measured in the window; a future without a "
            "measurement counts as no outcome, so the risk is P(measured and high), not P(high | measured)",
        ),
    }


_FIELDS = {f.name for f in fields(ZeroShotRule)}


def parse_rules(source: dict, where: str) -> dict[str, ZeroShotRule]:
    """Rules by task from a rules file's TOML (`[tasks.NAME]` tables); errors name the file, the task, the field."""
    if source.get("format", RULES_FORMAT) > RULES_FORMAT:
        raise RuleError(f"{where}: format {source['format']} is newer than this ehrscale reads ({RULES_FORMAT})")
    unknown = set(source) - {"format", "tasks"}
    if unknown:
        raise RuleError(f"{where}: unknown top-level keys {sorted(unknown)}; rules go in [tasks.NAME] tables")
    rules = {}
    for task, table in source.get("tasks", {}).items():
        bad = set(table) - _FIELDS
        if bad:
            raise RuleError(f"{where}: [tasks.{task}] has unknown fields {sorted(bad)}; known: {sorted(_FIELDS)}")
        values = dict(table)
        for name in ("outcome", "stop"):
            if isinstance(values.get(name), str):
                values[name] = (values[name],)
            elif name in values:
                values[name] = tuple(values[name])
        try:
            rules[task] = ZeroShotRule(**values)
        except (RuleError, TypeError) as error:
            raise RuleError(f"{where}: [tasks.{task}]: {error}") from None
    return rules


def read_rules(path: Path) -> dict[str, ZeroShotRule]:
    """A rules file's rules by task."""
    path = Path(path)
    try:
        source = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RuleError(f"no rules file {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise RuleError(f"{path}: not valid TOML: {error}") from None
    return parse_rules(source, str(path))


def rule_for(task: str, built_in: dict[str, ZeroShotRule], users: dict[str, ZeroShotRule]) -> ZeroShotRule:
    """A task's rule: the user's if given, else the built-in one; a task with neither is refused with what to do."""
    if task in users:
        return users[task]
    if task in built_in:
        return built_in[task]
    raise RuleError(
        f"zero-shot is not available for {task!r}: it is not a built-in task and no rule was given for it; write "
        f"one in a rules file ([tasks.{task}] with outcome, stop and horizon_hours; docs/evaluation.md) and pass "
        "it with --rules"
    )
