"""Trackers: a run's hyper-parameters once, its metrics per logged step, its summary at the end.

`metrics.jsonl` in the run folder is always written: it is the record the analysis reads, so a failure to write it
stops the run like a failed checkpoint would. The optional backends of a spec's `[tracking]` (`scaling.runspec.
Tracking`) are conveniences: TensorBoard event files (`<run>/tensorboard/`, written by tensorboardX, no TensorFlow)
and a Weights & Biases run (offline by default: `<run>/wandb/offline-run-*`, for `wandb sync`). A backend that fails
(not installed, no disk, bad credentials) warns once in the run's log and is dropped; training goes on. Both write
from a background thread or process, so a logged step costs a queue put.

One tracker run per training run, named by its run id, grouped by sweep ("<name>/v<version>") and tagged with its
family, width, budget and seed, so a tracker's run table slices an IsoFLOP grid. No JAX here.
"""

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from scaling.record import METRICS, StartRecord
from scaling.runspec import RunSpec, Tracking

GRID_RECIPE_FIELDS = ("lr_multiplier", "lr_width_product", "schedule", "context", "batch_rows", "bags_per_row")


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker shows of a run before its first step."""

    name: str  # the run folder's name (a sweep's run id)
    folder: Path  # the run folder, where file-based trackers write
    group: str
    tags: tuple[str, ...]
    config: dict  # hyper-parameters: flat names -> numbers or strings


def tracked_run(spec: RunSpec, folder: Path, record: StartRecord | None = None) -> TrackedRun:
    """A run as trackers see it: tags that slice an IsoFLOP grid, and its shape and recipe as hyper-parameters."""
    folder = Path(folder)
    budget = f"budget={spec.budget:.3g}" if spec.budget else ("trunk" if spec.branch_points else "budget=none")
    tags = (f"family={spec.family}", f"width={spec.width}", budget, f"seed={spec.seed}")
    config = {
        "family": spec.family,
        "width": spec.width,
        "tokens": spec.tokens,
        "seed": spec.seed,
        "budget": spec.budget or 0.0,
        "dtype": spec.dtype,
        "convention": spec.convention,
        # the recipe's knobs a grid varies; the whole recipe is in the run folder's spec.json
        **{f"recipe/{k}": getattr(spec.recipe, k) for k in GRID_RECIPE_FIELDS},
    }
    for key in ("params", "params_nonembed", "steps", "tokens_per_step", "flops", "fingerprint"):
        if record is not None and getattr(record, key, None) is not None:
            config[key] = getattr(record, key)
    return TrackedRun(folder.name, folder, spec.tracking.group, tags, config)


class JsonlMetrics:
    """metrics.jsonl: one JSON object per logged step; a resumed run first drops the rows after its checkpoint."""

    def __init__(self, folder: Path, start_step: int):
        self.path = Path(folder) / METRICS
        _truncate(self.path, start_step)
        self.file = open(self.path, "a")

    def log(self, row: Mapping) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _truncate(path: Path, start_step: int) -> None:
    """Keep the rows up to the resumed checkpoint's step: the steps after it will be logged again."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line)["step"] <= start_step]
    path.write_text("".join(line + "\n" for line in kept))


class TensorBoardTracker:
    """TensorBoard event files in `<folder>/tensorboard/`: scalars under train/ and eval/, the hyper-parameters as
    text and, at the end, in the HParams table with the final metrics."""

    def __init__(self, run: TrackedRun, folder: Path | None = None):
        from tensorboardX import SummaryWriter

        self.run = run
        self.writer = SummaryWriter(logdir=str(folder or run.folder / "tensorboard"), flush_secs=10)
        self.writer.add_text("run", _markdown(run), 0)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            if isinstance(value, int | float) and key != "step":
                self.writer.add_scalar(_tag(key), value, step)

    def image(self, tag: str, png: Path) -> None:
        from matplotlib.image import imread

        self.writer.add_image(tag, imread(png)[..., :3], 0, dataformats="HWC")

    def finish(self, summary: Mapping) -> None:
        from tensorboardX.summary import hparams

        numbers = {f"final/{k}": v for k, v in summary.items() if _number(v)}
        config = {k: v for k, v in self.run.config.items() if isinstance(v, int | float | str | bool)}
        # The HParams records in this run's own file (SummaryWriter.add_hparams opens a second writer, whose file
        # takes the same name, and replaces this one, when both open within a second)
        for record in hparams(config, numbers):
            self.writer.file_writer.add_summary(record)
        for key, value in numbers.items():
            self.writer.add_scalar(key, value, 0)
        self.writer.close()


def _tag(key: str) -> str:
    return key.replace("eval_", "eval/") if key.startswith("eval_") else f"train/{key}"


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _markdown(run: TrackedRun) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in run.config.items())
    return f"**{run.name}** ({run.group or 'no group'}; {', '.join(run.tags)})\n\n| field | value |\n|---|---|\n{rows}"


class WandbTracker:
    """A Weights & Biases run in `<folder>/wandb/`; offline unless the spec says online (then it needs a login)."""

    def __init__(self, run: TrackedRun, tracking: Tracking, folder: Path | None = None):
        import wandb  # the `wandb` extra

        self.run = wandb.init(
            project=tracking.project,
            group=run.group or None,
            name=run.name,
            tags=list(run.tags),
            config=run.config,
            dir=str(folder or run.folder),
            mode=tracking.wandb_mode,
            reinit="create_new",  # a sweep worker trains run after run in one process
            # no system metrics, git state, code, machine facts or package list: the run's curves only
            settings=wandb.Settings(
                silent=True,
                console="off",
                x_disable_stats=True,
                x_disable_meta=True,
                x_disable_machine_info=True,
                x_save_requirements=False,
                disable_git=True,
                save_code=False,
                disable_job_creation=True,
            ),
        )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log({_tag(k): v for k, v in metrics.items() if k != "step"}, step=step)

    def image(self, tag: str, png: Path) -> None:
        import wandb

        self.run.log({tag: wandb.Image(str(png))})

    def finish(self, summary: Mapping) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in summary.items() if _number(v)})
        self.run.finish()


class Trackers:
    """The spec's optional backends behind one call each; one that raises is reported once and dropped."""

    def __init__(self, tracking: Tracking, run: TrackedRun, warn: Callable[[str], None], folder: Path | None = None):
        self.warn = warn
        self.backends: dict[str, object] = {}
        for name in tracking.backends:
            self._call(name, lambda name=name: self.backends.__setitem__(name, _open(name, run, tracking, folder)))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, backend in list(self.backends.items()):
            self._call(name, lambda: backend.log(step, metrics))

    def image(self, tag: str, png: Path) -> None:
        for name, backend in list(self.backends.items()):
            self._call(name, lambda: backend.image(tag, png))

    def finish(self, summary: Mapping) -> None:
        for name, backend in list(self.backends.items()):
            self._call(name, lambda: backend.finish(summary))
        self.backends.clear()

    def _call(self, name: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as error:  # noqa: BLE001 -- a tracker must never stop training: report and drop it
            self.backends.pop(name, None)
            hint = " (install the extra: uv sync --extra wandb)" if isinstance(error, ImportError) else ""
            self.warn(f"tracker {name} failed and is off for this run: {type(error).__name__}: {error}{hint}")


def _open(name: str, run: TrackedRun, tracking: Tracking, folder: Path | None):
    if name == "tensorboard":
        return TensorBoardTracker(run, folder)
    if name == "wandb":
        return WandbTracker(run, tracking, folder)
    raise ValueError(f"unknown tracker {name!r}")
