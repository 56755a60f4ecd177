"""One run end to end: train (or resume, or skip), then evaluate the tasks its spec lists."""

import json
from pathlib import Path

from scaling.evaluate import evaluate
from scaling.runspec import RunSpec
from scaling.train import train


def run(spec: RunSpec, out: Path, log=print) -> dict:
    """Train, then evaluate any listed task whose AUROC the result does not hold yet."""
    result = train(spec, out, log=log)
    pending = [t for t in spec.tasks if f"auroc_{t}" not in result and result["status"] == "ok"]
    if pending:
        report = evaluate(out, tuple(pending), log=log)
        result = json.loads((Path(out) / "result.json").read_text())
        skipped = [t for t in pending if report[t]["probe"]["status"] != "ok"]
        if skipped:
            log(f"not scored: {', '.join(skipped)} (see eval.json)")
    return result
