"""One run end to end: train (or resume, or skip), then evaluate the tasks its spec lists."""

from pathlib import Path

from scaling.evaluate import evaluate
from scaling.record import RESULT, read_eval
from scaling.runspec import RunSpec, Tracking
from scaling.sweep.state import settled_tasks
from scaling.tracking import Trackers, tracked_run
from scaling.train import train


def run(spec: RunSpec, out: Path, log=print) -> dict:
    """Train, then evaluate any listed task not evaluated yet; the spec's trackers see both (a finished run is not
    tracked again: `ehrscale track` replays it)."""
    out = Path(out)
    tracking = spec.tracking if not (out / RESULT).exists() else Tracking()
    trackers = Trackers(tracking, tracked_run(spec, out), warn=lambda text: log(f"warning: {text}"))
    result = {}
    try:
        result = train(spec, out, log=log, trackers=trackers)
        pending = [t for t in spec.tasks if t not in settled_tasks(out)] if result["status"] == "ok" else []
        if pending:
            report = evaluate(out, tuple(pending), log=log)
            skipped = [t for t in pending if report[t]["probe"]["status"] != "ok"]
            if skipped:
                log(f"not scored: {', '.join(skipped)} (see eval.json)")
    finally:
        trackers.finish(tracker_summary(result, out))
    return result


def tracker_summary(result: dict, out: Path) -> dict:
    """The numbers a tracker run ends with: the result's, and each scored task's probe AUROC (eval.json)."""
    summary = {
        k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool) and k != "format"
    }
    for task, entry in read_eval(out).items() if result else ():
        probe = entry.get("probe", {})
        if probe.get("status") == "ok":
            summary[f"auroc_{task}"] = probe["auroc"]
    return summary
