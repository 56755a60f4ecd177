"""A run's record on disk: `result.json` (written once, by training) and `eval.json` (by evaluation).

JAX-free, so the sweep driver, `collect` and `sweep status` read runs without a prepared dataset.

`result.json`, format 2 (`"format": 2`):
    status, family, width, layers, heads, seed, budget (what the sweep planned it for; null for a
    lone run), convention, flops_per_token (under the convention), flops_per_token_exact, flops
    (= flops_per_token x tokens), flops_exact, params, params_nonembed, tokens, steps,
    tokens_per_step, loss (mean per token, or per masked lab), loss_se (its standard error over the
    evaluation's sequences), loss_split, loss_sequences, loss_tokens, train_loss, wall_seconds,
    tokens_per_s, mfu, fingerprint; added since, absent meaning their value before them: lr_multiplier
    (1), peak_lr (the schedule's peak; absent: not recorded), schedule ("cosine"), role ("run", or
    "trunk": a WSD trunk trained for its branches), flops_spent (= flops; a branch's own steps and
    its share of its trunk, a trunk's 0), branch_of and branch_step (a branch's trunk and the step
    it started from), microbatch_rows (rows of one forward/backward pass: the batch's rows unless the
    step ran in micro-batches).
Format 1 (before the format key): training wrote it, then evaluation rewrote it with its AUROCs;
no budget, no exact per-token cost, no standard error, and `loss` came from 8 x 16 rows of the
tuning split. It still reads: `read_result` fills what it can and says what it assumed.

`eval.json`, format 2: {"format": 2, "tasks": {task: {probe, baselines, oracle, ...}}}; format 1 was
the tasks mapping itself.
"""

import json
from pathlib import Path

RESULT_FORMAT = 2
EVAL_FORMAT = 2
RESULT = "result.json"
EVAL = "eval.json"


def read_result(run_dir: Path) -> tuple[dict, list[str]] | None:
    """A run's result in the current format, and notes on what an older format made us assume; None if unfinished."""
    path = Path(run_dir) / RESULT
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    notes: list[str] = []
    version = result.get("format", 1)
    if version > RESULT_FORMAT:
        raise ValueError(
            f"{path}: format {version} is newer than this ehrscale reads ({RESULT_FORMAT}); upgrade ehrscale"
        )
    if version == 1:
        result = {k: v for k, v in result.items() if not k.startswith(("auroc_", "auprc_"))}  # eval.json holds them now
        result.setdefault("loss_split", "tuning")
        result.setdefault("loss_se", None)
        result.setdefault("budget", None)
        if "flops_per_token" in result and result.get("convention") == "exact":
            result.setdefault("flops_per_token_exact", result["flops_per_token"])
        notes.append(
            "format 1 (no standard error of the loss, no planned budget; its loss is the mean over the "
            "first 8 x 16 rows of the tuning split)"
        )
        result["format"] = 1
    for key, before in (("lr_multiplier", 1.0), ("schedule", "cosine"), ("role", "run")):
        result.setdefault(key, before)
    if "flops" in result:
        result.setdefault("flops_spent", result["flops"])
    return result, notes


def read_eval(run_dir: Path) -> dict[str, dict]:
    """The evaluated tasks of a run ({} if none), whatever the eval.json format."""
    path = Path(run_dir) / EVAL
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return data["tasks"] if data.get("format", 1) >= 2 else data


def eval_document(tasks: dict[str, dict]) -> dict:
    return {"format": EVAL_FORMAT, "tasks": tasks}


def eval_columns(tasks: dict[str, dict]) -> dict[str, float]:
    """The results-table columns of a run's evaluation: the probe's AUROC (its interval, AUPRC), XGBoost's and the
    oracle's."""
    columns: dict[str, float] = {}
    for task, entry in tasks.items():
        probe = entry.get("probe") or {}
        if probe.get("status") == "ok":
            columns.update(
                {
                    f"auroc_{task}": probe["auroc"],
                    f"auroc_{task}_lo": probe["auroc_lo"],
                    f"auroc_{task}_hi": probe["auroc_hi"],
                    f"auprc_{task}": probe["auprc"],
                }
            )
        xgboost = ((entry.get("baselines") or {}).get("xgboost") or {}).get("auroc")
        on_bags = (entry.get("baselines_bags") or {}).get  # lab-bag families: the same bags' values
        oracle = (entry.get("oracle") or {}).get("auroc")
        named = (
            (f"xgboost_auroc_{task}", xgboost),
            (f"xgboost_bags_auroc_{task}", (on_bags("xgboost") or {}).get("auroc")),
            (f"logistic_bags_auroc_{task}", (on_bags("logistic") or {}).get("auroc")),
            (f"oracle_auroc_{task}", oracle),
        )
        columns.update({k: v for k, v in named if v is not None})
    return columns
