"""One run end to end: train (or resume, or skip), then evaluate the tasks its spec lists."""

from pathlib import Path

from scaling.evaluate import evaluate
from scaling.runspec import RunSpec
from scaling.sweep.state import settled_tasks
from scaling.train import train


def run(spec: RunSpec, out: Path, log=print) -> dict:
    """Train, then evaluate any listed task not evaluated yet."""
    result = train(spec, out, log=log)
    pending = [t for t in spec.tasks if t not in settled_tasks(Path(out))] if result["status"] == "ok" else []
    if pending:
        report = evaluate(out, tuple(pending), log=log)
        skipped = [t for t in pending if report[t]["probe"]["status"] != "ok"]
        if skipped:
            log(f"not scored: {', '.join(skipped)} (see eval.json)")
    return result
