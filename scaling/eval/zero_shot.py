"""Zero-shot evaluation of the timeline decoder: risks read off the futures it generates, as ETHOS and CoMET did.

For each held-out cohort row the decoder is given the subject's history up to the prediction time (the events its
inputs may use, cut to the context as training cut it) and generates N futures (scaling.models.sampler), each
ending at the task's outcome, at a stop code, at the rule's horizon or at the token limit
(scaling.eval.zero_shot_rules). Two estimators of the row's risk, each with its standard error:

- Monte Carlo: the share of the N futures that reach the outcome (ETHOS's `rep_num`);
- rollout: N other futures drawn with the outcome's tokens never sampled, each scored by the model's own
  probability of the outcome along it, 1 - prod(1 - P(outcome next)) (SCOPE/REACH, arXiv 2602.03730): unbiased for
  the same probability, with less variance per future.

Scored like the probe (AUROC and AUPRC with bootstrap intervals), plus the Brier score, the expected calibration
error and a reliability table, the share of futures that ended by a rule, and how the AUROC grows with the number
of futures for each estimator. Held-out predictions go to the data folder, never to the run folder.
"""

import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score

from scaling.data.dataset import PreparedDataset
from scaling.data.tasks import sample_rows
from scaling.data.timelines import Timelines, Vocabulary
from scaling.eval.probe import MIN_CLASS, score
from scaling.eval.zero_shot_rules import Settings, ZeroShotRule
from scaling.models.sampler import EVENT, HORIZON, RUNNING, Sampler, Watch

BATCH_ROWS = 256  # futures generated together: one compiled step for this many rows
CALIBRATION_BINS = 10
CENSORED_WARNING = 0.95  # below this share of futures ended by a rule, the output warns of the token limit's bias
# Outcome frequency bands (a task's held-out prevalence), as zero-shot analyses report performance by them.
BANDS = ((0.01, "rare (< 1%)"), (0.10, "uncommon (1-10%)"), (1.01, "common (>= 10%)"))


def token_minutes(vocab: Vocabulary) -> np.ndarray:
    """How far each token moves a future's clock: a time-gap token its bin's geometric middle (the last bin, which
    repeats once per `repeat_minutes`, that many minutes); every other token 0."""
    scheme = vocab.config.intervals
    minutes = np.zeros(vocab.size, np.float64)
    index = {token: i for i, token in enumerate(vocab.tokens)}
    bounds = (*scheme.bounds_minutes, None)
    for label, lo, hi in zip(scheme.labels, bounds[:-1], bounds[1:], strict=True):
        minutes[index[f"TIME//{label}"]] = math.sqrt(lo * hi) if hi is not None else scheme.repeat_minutes
    return minutes


def _matching(vocab: Vocabulary, patterns: tuple[str, ...]) -> np.ndarray:
    """Code tokens matched by any of the patterns (re.search)."""
    codes = np.array([kind == "code" for kind in vocab.kinds])
    if not patterns:
        return np.zeros(vocab.size, bool)
    joined = re.compile("|".join(f"(?:{p})" for p in patterns))
    return codes & np.array([bool(joined.search(token)) for token in vocab.tokens])


def _high_values(vocab: Vocabulary, code: str, threshold: float) -> np.ndarray:
    """The value tokens (Q1..Qn) of a code whose bin's middle lies above the threshold (the first bin's upper edge,
    the last bin's lower edge); none for a code without quantiles."""
    row = vocab.quantiles.filter(pl.col("code") == code)
    high = np.zeros(vocab.size, bool)
    if row.is_empty():
        return high
    edges = np.array([row[c][0] for c in vocab.quantiles.columns if c != "code"], np.float64)
    middles = np.concatenate([[edges[0]], (edges[:-1] + edges[1:]) / 2, [edges[-1]]])
    first = vocab.tokens.index("Q1")
    high[first : first + len(middles)] = middles > threshold
    return high


@dataclass(frozen=True)
class Reading:
    """A rule turned into the sampler's watch over one vocabulary, and what it matched."""

    watch: Watch
    outcome_tokens: np.ndarray  # bool [v]: tokens whose presence in a history means the outcome already happened
    matched: dict[str, list[str]]  # "outcome" / "stop": the code tokens each pattern list matched
    horizon_is_outcome: bool

    def outcome(self, ended: np.ndarray) -> np.ndarray:
        """Which futures reached the outcome."""
        return ended == (HORIZON if self.horizon_is_outcome else EVENT)

    def rollout_risk(self, survival: np.ndarray) -> np.ndarray:
        """Each rollout future's probability of the outcome (its watched event is the stop when the outcome is the
        horizon)."""
        return survival if self.horizon_is_outcome else 1.0 - survival


def read_rule(rule: ZeroShotRule, vocab: Vocabulary) -> Reading:
    """The sampler's watch for a rule: the outcome's tokens (or, for an outcome that is reaching the horizon, the
    stop codes as the watched event), the stop codes, the clock and the horizon."""
    outcome_codes, stop = _matching(vocab, rule.outcome), _matching(vocab, rule.stop)
    event_after = np.zeros(vocab.size, np.int64)
    values = [np.zeros(vocab.size, bool)]
    if rule.value_above is not None:
        for i in np.flatnonzero(outcome_codes):
            high = _high_values(vocab, vocab.tokens[i], rule.value_above)
            if high.any():
                event_after[i], values = len(values), [*values, high]
        event = np.zeros(vocab.size, bool)
    else:
        event = outcome_codes
    if rule.horizon_is_outcome:
        event, stop = stop, np.zeros(vocab.size, bool)
    watch = Watch(
        event=event,
        event_after=event_after,
        event_values=np.stack(values),
        stop=stop,
        minutes=token_minutes(vocab),
        horizon_minutes=rule.horizon_hours * 60.0,
    )
    matched = {
        "outcome": [vocab.tokens[i] for i in np.flatnonzero(outcome_codes)],
        "stop": [vocab.tokens[i] for i in np.flatnonzero(_matching(vocab, rule.stop))],
    }
    return Reading(watch, outcome_codes & (rule.value_above is None), matched, rule.horizon_is_outcome)


def generate(
    sampler: Sampler, reading: Reading, history: list[np.ndarray], prefixes: list[int], settings: Settings, avoid: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """N futures per history: whether each reached the outcome [rows, N], its rollout risk [rows, N], whether it
    ended by a rule [rows, N], and the tokens generated."""
    n = settings.futures
    repeated = [(h, p) for h, p in zip(history, prefixes, strict=True) for _ in range(n)]
    outcome, rollout, completed, tokens = [], [], [], 0
    for batch, start in enumerate(range(0, len(repeated), sampler.rows)):
        chunk = repeated[start : start + sampler.rows]
        seed = settings.seed * 1_000_003 + 2 * batch + int(avoid)
        futures = sampler.sample(
            [h for h, _ in chunk], [p for _, p in chunk], reading.watch, settings.max_new_tokens, seed, avoid
        )
        outcome.append(reading.outcome(futures.ended))
        rollout.append(reading.rollout_risk(futures.survival.astype(np.float64)))
        completed.append(futures.completed)
        tokens += int(futures.steps.sum())
    shape = (len(history), n)
    return (
        np.concatenate(outcome).reshape(shape),
        np.concatenate(rollout).reshape(shape),
        np.concatenate(completed).reshape(shape),
        tokens,
    )


def expected_calibration_error(y: np.ndarray, risk: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """The rows' mean |observed rate - mean risk| over equal-width risk bins, weighted by the bins' rows."""
    which = np.minimum((risk * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.sum() * abs(y[inside].mean() - risk[inside].mean())
    return float(error / len(y))


def reliability(y: np.ndarray, risk: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, list[float]]:
    """The reliability table: per non-empty equal-width bin, the mean risk and the observed rate."""
    observed, predicted = calibration_curve(y, risk, n_bins=bins, strategy="uniform")
    return {"predicted": [round(float(p), 5) for p in predicted], "observed": [round(float(o), 5) for o in observed]}


def band(prevalence: float) -> str:
    return next(name for upper, name in BANDS if prevalence < upper)


def futures_curve(y: np.ndarray, draws: np.ndarray, seed: int) -> dict[int, float]:
    """AUROC of the risk averaged over the first n futures, for n = 1, 2, 4, ... up to all of them."""
    counts = sorted({*(2**k for k in range(int(math.log2(draws.shape[1])) + 1)), draws.shape[1]})
    return {n: round(score(y, draws[:, :n].mean(axis=1), seed)["auroc"], 5) for n in counts}


def estimator_scores(y: np.ndarray, draws: np.ndarray, seed: int) -> tuple[dict, np.ndarray]:
    """One estimator's scores over rows [rows, N] of per-future risks, and its risk per row."""
    risk = draws.mean(axis=1)
    se = draws.std(axis=1, ddof=1) / math.sqrt(draws.shape[1]) if draws.shape[1] > 1 else np.full(len(risk), np.nan)
    scores = {
        **score(y, risk, seed),
        "brier": float(brier_score_loss(y, np.clip(risk, 0, 1))),
        "ece": expected_calibration_error(y, np.clip(risk, 0, 1)),
        "reliability": reliability(y, np.clip(risk, 0, 1)),
        "mean_risk": float(risk.mean()),
        "mean_standard_error": float(np.nanmean(se)),
        "auroc_by_futures": futures_curve(y, draws, seed),
    }
    return scores, risk


def zero_shot_task(
    sampler: Sampler,
    dataset: PreparedDataset,
    task: str,
    rule: ZeroShotRule,
    settings: Settings,
    timelines: Timelines | None = None,
) -> tuple[dict, pl.DataFrame | None, np.ndarray | None]:
    """One task's zero-shot scores (a dict for eval.json), and its held-out rows with their Monte Carlo risk (None
    when the cohort is too small to score). `timelines`: the held-out timelines (default: the dataset's)."""
    started = time.perf_counter()
    vocab = dataset.vocabulary()
    reading = read_rule(rule, vocab)
    labels = dataset.task(task).join(dataset.splits(), on="subject_id", how="left")
    rows = sample_rows(labels.filter(pl.col("split") == "held_out"), settings.rows, settings.seed)
    inclusive = dataset.task_inputs(task) == "at_or_before"
    cuts = rows["prediction_time"].dt.epoch("us").to_numpy()
    timelines = timelines or dataset.timelines("held_out")
    history, prefixes, keep = timelines.histories(rows["subject_id"].to_numpy(), cuts, inclusive)
    rows = rows.filter(pl.Series(keep))
    refused = 0
    if rule.once:  # a history that already holds a once-only outcome (a death) is no question to ask
        holds = np.array([reading.outcome_tokens[h].any() for h in history], bool)
        refused = int(holds.sum())
        history = [h for h, bad in zip(history, holds, strict=True) if not bad]
        prefixes = [p for p, bad in zip(prefixes, holds, strict=True) if not bad]
        rows = rows.filter(pl.Series(~holds))
    y = rows["boolean_value"].to_numpy().astype(np.int64)
    actual = rule_on_actual_futures(reading, timelines, rows, inclusive, history, y)
    entry = {
        "status": "ok",
        "rule": {k: v for k, v in rule.__dict__.items() if v not in ((), None, "", False) and v != math.inf},
        "matched": reading.matched,
        "settings": asdict(settings),
        "rows_without_timeline": int((~keep).sum()),
        "rows_refused_outcome_in_history": refused,
        "rule_on_actual_futures": actual,
    }
    positives = int(y.sum())
    if min(positives, len(y) - positives) < MIN_CLASS:
        reason = (
            f"too small to score: {positives} positives and {len(y) - positives} negatives in the held-out rows "
            f"(at least {MIN_CLASS} of each are needed)"
        )
        return {**entry, "status": "too small", "reason": reason}, None, None
    outcome, _, completed, plain_tokens = generate(sampler, reading, history, prefixes, settings, avoid=False)
    _, rollout, rollout_completed, rollout_tokens = generate(sampler, reading, history, prefixes, settings, True)
    monte_carlo, risk = estimator_scores(y, outcome.astype(np.float64), settings.seed)
    rollout_scores, _ = estimator_scores(y, rollout, settings.seed)
    seconds = time.perf_counter() - started
    tokens = plain_tokens + rollout_tokens
    prevalence = float(y.mean())
    entry |= {
        **{k: monte_carlo[k] for k in ("auroc", "auroc_lo", "auroc_hi", "auprc", "n", "positives")},
        "prevalence": prevalence,
        "frequency_band": band(prevalence),
        "monte_carlo": monte_carlo,
        "rollout": rollout_scores,
        "completed": float(completed.mean()),
        "rollout_completed": float(rollout_completed.mean()),
        "generated_tokens": tokens,
        "tokens_per_future": round(plain_tokens / outcome.size, 2),  # the Monte Carlo futures
        "seconds": round(seconds, 2),
        "tokens_per_second": round(tokens / seconds, 1),
    }
    return entry, rows.select("subject_id", "prediction_time", "boolean_value"), risk


def read_actual_futures(
    reading: Reading, timelines: Timelines, rows: pl.DataFrame, inclusive: bool, history: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The rule read on what actually came after each row's prediction time (rows whose subjects have a timeline
    here, `history` theirs): whether each reached the outcome, and how each ended."""
    cuts = rows["prediction_time"].dt.epoch("us").to_numpy()
    futures, _, _ = timelines.histories(rows["subject_id"].to_numpy(), cuts, inclusive, future=True)
    ends = np.array([reading.watch.read(f, int(h[-1]))[0] for f, h in zip(futures, history, strict=True)], np.int64)
    return reading.outcome(ends), ends


def rule_on_actual_futures(
    reading: Reading, timelines: Timelines, rows: pl.DataFrame, inclusive: bool, history: list[np.ndarray], y
) -> dict:
    """The rule read on the actual futures against the labels: the most this rule can give a perfect generator (a
    rule that disagrees with the task's labels caps zero-shot AUROC, whatever the model). Aggregates only."""
    reached, ends = read_actual_futures(reading, timelines, rows, inclusive, history)
    read = reached.astype(np.int64)
    two_classes = 0 < y.sum() < len(y)
    return {
        "agreement": float((read == y).mean()) if len(y) else None,
        "auroc": float(roc_auc_score(y, read)) if two_classes else None,
        "ended_by_rule": float((ends != RUNNING).mean()) if len(y) else None,
    }


def predictions_path(folder: Path, task: str) -> Path:
    return Path(folder) / "zero_shot" / f"{task}.parquet"


def describe(task: str, entry: dict) -> str:
    """The lines `ehrscale eval --zero-shot` prints for a task."""
    if entry["status"] != "ok":
        return f"{task} (zero-shot): {entry['reason']}"
    mc, rollout = entry["monte_carlo"], entry["rollout"]
    futures = entry["settings"]["futures"]
    lines = [
        f"{task} (zero-shot, {futures} futures per row, {entry['n']} rows, {entry['prevalence']:.1%} positive: "
        f"{entry['frequency_band']}):",
        f"  Monte Carlo AUROC {mc['auroc']:.3f} [{mc['auroc_lo']:.3f}, {mc['auroc_hi']:.3f}], AUPRC {mc['auprc']:.3f}, "
        f"Brier {mc['brier']:.4f}, ECE {mc['ece']:.3f} (mean risk {mc['mean_risk']:.3f}, "
        f"standard error per row {mc['mean_standard_error']:.3f})",
        f"  rollout     AUROC {rollout['auroc']:.3f} [{rollout['auroc_lo']:.3f}, {rollout['auroc_hi']:.3f}], "
        f"Brier {rollout['brier']:.4f}, ECE {rollout['ece']:.3f} (standard error per row "
        f"{rollout['mean_standard_error']:.3f})",
        "  AUROC by futures: "
        + "; ".join(
            f"{n}: {mc['auroc_by_futures'][n]:.3f} / {rollout['auroc_by_futures'][n]:.3f}"
            for n in mc["auroc_by_futures"]
        )
        + " (Monte Carlo / rollout)",
        f"  {entry['completed']:.1%} of futures ended by a rule ({entry['rollout_completed']:.1%} of the rollout's); "
        f"{entry['generated_tokens']:,} tokens in {entry['seconds']:.0f} s ({entry['tokens_per_second']:,.0f}/s)",
    ]
    if entry["completed"] < CENSORED_WARNING:
        lines.append(
            f"  warning: {1 - entry['completed']:.1%} of futures reached the token limit and count as no outcome; "
            "the longest futures are cut first, which biases the risk (for a long stay, against exactly the long "
            "stays): raise --max-new-tokens until nearly all end by the rule"
        )
    actual = entry.get("rule_on_actual_futures") or {}
    if actual.get("auroc") is not None:
        lines.append(
            f"  the rule on the patients' actual futures: agrees with the label on {actual['agreement']:.1%} of rows, "
            f"AUROC {actual['auroc']:.3f} ({actual['ended_by_rule']:.1%} ended by the rule): the most it can give"
        )
    if entry.get("rows_refused_outcome_in_history"):
        lines.append(
            f"  {entry['rows_refused_outcome_in_history']} rows refused: the outcome is already in the history"
        )
    if entry.get("predictions"):
        lines.append(f"  held-out risks (they name subjects: data, kept with it): {entry['predictions']['path']}")
    return "\n".join(lines)
