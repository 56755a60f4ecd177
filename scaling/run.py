"""One run end to end: train (or resume, or skip), then evaluate the tasks its spec lists."""

from pathlib import Path

from scaling.eval.evaluate import evaluate, evaluate_imputation, evaluate_zero_shot
from scaling.families import FAMILIES
from scaling.record import ResultRecord, RunFolder
from scaling.runspec import RunSpec, Tracking
from scaling.tracking import Trackers, tracked_run
from scaling.training.loop import train


def run(spec: RunSpec, out: Path, log=print) -> ResultRecord:
    """Train, then evaluate any listed task not evaluated yet (and, with [eval] zero_shot, generate its futures; a
    lab-bag run, its imputation); the spec's trackers see both (a finished run is not tracked again: `ehrscale
    track` replays it)."""
    folder = RunFolder(out)
    tracking = spec.tracking if not folder.trained else Tracking()
    trackers = Trackers(tracking, tracked_run(spec, folder.path), warn=lambda text: log(f"warning: {text}"))
    result = None
    try:
        result = train(spec, folder.path, log=log, trackers=trackers)
        settled = folder.settled_tasks()
        pending = [t for t in spec.tasks if t not in settled] if result.status == "ok" else []
        if pending:
            report = evaluate(folder.path, tuple(pending), log=log)
            skipped = [t for t in pending if not report.tasks[t].scored]
            if skipped:
                log(f"not scored: {', '.join(skipped)} (see eval.json)")
        settings = spec.eval.zero_shot
        unsampled = [t for t in spec.tasks if t not in folder.zero_shot_tasks()] if result.status == "ok" else []
        if spec.eval.at_run_end and unsampled and result.role != "trunk":
            rules = Path(settings.rules) if settings.rules else None
            evaluate_zero_shot(folder.path, tuple(unsampled), settings, rules, log=log)
        imputes = FAMILIES[spec.family].imputed_values is not None
        if imputes and result.status == "ok" and result.role != "trunk" and folder.imputation() is None:
            evaluate_imputation(folder.path, log=log)
    finally:
        trackers.finish(tracker_summary(result, folder))
    return result


def tracker_summary(result: ResultRecord | None, folder: RunFolder) -> dict:
    """The numbers a tracker run ends with: the result's, and each scored task's probe AUROC (eval.json)."""
    if result is None:
        return {}
    scored = {name: entry for name, entry in folder.evaluation().tasks.items() if entry.scored}
    return result.numbers() | {f"auroc_{name}": entry.probe["auroc"] for name, entry in scored.items()}
