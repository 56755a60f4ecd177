"""A run's checkpoints (orbax): resuming from the newest readable one, a trunk's branch points, a trained model."""

from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from scaling.data.dataset import PreparedDataset
from scaling.record import BRANCH_POINTS, RunError, RunFolder
from scaling.runspec import RunSpec
from scaling.training.step import optimizer_state
from scaling.training.tasks import build_model


def checkpoint_manager(folder: RunFolder, keep: int) -> ocp.CheckpointManager:
    """The run's rotating checkpoints: asynchronous, the last `keep` kept."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
    return ocp.CheckpointManager(folder.checkpoints, options=options)


def save(manager: ocp.CheckpointManager, step: int, state: dict) -> None:
    manager.save(step, args=ocp.args.StandardSave(state))


def _restore(manager: ocp.CheckpointManager, step: int, like: dict) -> dict:
    """The state saved at `step`, read into the shapes and dtypes of `like`."""
    return manager.restore(step, args=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, like)))


def restore_newest_readable(manager: ocp.CheckpointManager, like: dict, out: Path, log) -> tuple[int, dict] | None:
    """(step, state) of the newest checkpoint that reads back; unreadable newer ones are deleted with a warning
    (a crash mid-write, a damaged disk), so the run resumes from the one before. None: start from step 0."""
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return step, _restore(manager, step, like)
        except Exception as error:  # orbax/tensorstore raise many kinds; any unreadable checkpoint is skipped
            reason = str(error).splitlines()[0][:200] if str(error) else ""
            log(
                f"warning: {out}: the checkpoint at step {step:,} cannot be read ({type(error).__name__}: {reason}); "
                "deleting it and falling back to the one before"
            )
            manager.delete(step)
    return None


def branch_point_manager(folder: RunFolder) -> ocp.CheckpointManager:
    """A trunk's kept states, one per branch, never rotated out."""
    # Synchronous, and written before the regular checkpoint of the same step: a trunk that resumes from a later
    # checkpoint therefore has every earlier branch point on disk.
    options = ocp.CheckpointManagerOptions(max_to_keep=None, enable_async_checkpointing=False)
    return ocp.CheckpointManager(folder.branch_points, options=options)


def branch_point(trunk: RunFolder, step: int, like: dict) -> dict:
    """The trunk's state at `step`, or a RunError saying what is missing."""
    if not trunk.branch_points.is_dir():
        raise RunError(f"{trunk.path} holds no trunk states ({BRANCH_POINTS}/); train the trunk before its branches")
    manager = branch_point_manager(trunk)
    try:
        if step not in manager.all_steps():
            raise RunError(
                f"{trunk.path} has no state at step {step:,} for this branch (kept: "
                f"{', '.join(f'{s:,}' for s in sorted(manager.all_steps())) or 'none'}); train the trunk first, or "
                f"delete {trunk.path} to train it again"
            )
        return _restore(manager, step, like)
    finally:
        manager.close()


def restore_model(out: Path, spec: RunSpec, dataset: PreparedDataset) -> nnx.Module:
    """The run's model with the weights of its last checkpoint, its attention chosen for this platform."""
    model, _, _ = build_model(spec, dataset, abstract=True, attention="auto")
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    abstract = {  # shapes only: nothing computed
        "params": params,
        "opt_state": jax.eval_shape(lambda p: optimizer_state(spec.recipe, p), params),
    }
    manager = ocp.CheckpointManager(RunFolder(out).checkpoints)
    latest = manager.latest_step()
    if latest is None:
        raise RunError(f"{out}: no checkpoint to evaluate")
    restored = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
    manager.close()
    return nnx.merge(graphdef, nnx.State(restored["params"]))
