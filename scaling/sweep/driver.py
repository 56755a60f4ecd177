"""Run a sweep on Ray: one task per run (or per WSD trunk and its branches), on an embedded cluster or one joined
at an address.

The driver never imports JAX (a worker does, inside its task), so it holds no accelerator. It
asks each run folder where it stands, submits what is not finished, and retries: a lost worker
(a preemption, a node gone) is retried up to `[retries] preemptions` times and resumes from its
checkpoint; an error in the run up to `[retries] failures` times, then the run is marked failed
with its error and the others go on. Kill the driver at any point and run it again: finished runs
are skipped and half-done ones resume.
"""

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scaling.data.dataset import PreparedDataset
from scaling.record import SPEC, TRAIN_LOG, RunFolder
from scaling.sweep.plan import Plan, Unit, make_plan
from scaling.sweep.refine import next_widths, read_refined, write_refined
from scaling.sweep.spec import GPU_SHARE_USABLE, Resources, SweepSpec
from scaling.sweep.state import check_sweep_record, run_state, write_plan_record, write_runs_table

CPU_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


@dataclass
class Progress:
    """Counts a progress view shows; `eta_seconds` from the FLOPs done so far and the time they took."""

    total: int
    skipped: int = 0
    done: int = 0
    diverged: int = 0
    failed: int = 0
    running: int = 0
    preemptions: int = 0
    retried_failures: int = 0
    flops_total: float = 0.0
    flops_done: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    @property
    def eta_seconds(self) -> float | None:
        if not self.flops_done:
            return None
        elapsed = time.perf_counter() - self.started
        return elapsed * (self.flops_total - self.flops_done) / self.flops_done

    def line(self) -> str:
        eta = self.eta_seconds
        return (
            f"done {self.done + self.skipped}/{self.total} (skipped {self.skipped}) · running {self.running} · "
            f"failed {self.failed} · diverged {self.diverged} · preempted {self.preemptions}"
            + (f" · ETA {eta / 60:.1f} min" if eta is not None else "")
        )


@dataclass(frozen=True)
class Timing:
    """When the driver submitted a run's task, and when its body started and ended (wall clock)."""

    run_id: str
    submitted: float
    started: float
    ended: float


@dataclass(frozen=True)
class Summary:
    folder: Path
    runs_table: Path
    progress: Progress
    failed: dict[str, str]  # run id -> error
    wall_seconds: float
    timings: tuple[Timing, ...] = ()
    slots: int = 1


def worker_env(resources: Resources) -> dict[str, str]:
    """Environment of a run's worker: thread and memory settings that let runs share a machine."""
    env = {}
    if resources.gpus == 0 and resources.tpus == 0:
        env["JAX_PLATFORMS"] = "cpu"
        if resources.cpus <= 1:  # one core per run: XLA's own thread pool would fight the other runs
            env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + CPU_SINGLE_THREAD).strip()
    if resources.shares_gpu:
        # K runs on one GPU: none may take JAX's default 75% of it. Each allocates as it goes, up to its share less
        # room for the CUDA context and cuBLAS/cuDNN workspaces that XLA's allocator does not count; a run that needs
        # more fails with an out-of-memory error of its own instead of starving its neighbours.
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{resources.gpus * GPU_SHARE_USABLE:.4f}"
    return env


def execute_unit(records: list[tuple[dict, str]], cache_dir: str, env: dict[str, str] | None = None) -> dict:
    """Body of a Ray task: train (or resume, or skip) and evaluate each (spec, run folder) in order (a WSD trunk
    before its branches), and say how each ended and when."""
    started = time.time()
    # The worker's settings, set before JAX is first imported in this process. They come as an
    # argument, not as a Ray runtime_env: a runtime_env makes Ray start a dedicated worker for each
    # task (seconds each), where Ray's idle workers can take the task at once. A CPU worker reused
    # for the next run keeps the JAX it imported, with the same settings (the same sweep's).
    os.environ.update(env or {})
    from scaling.run import run  # JAX is imported here, in the worker, never in the driver
    from scaling.runspec import parse_spec
    from scaling.training.loop import enable_compilation_cache

    enable_compilation_cache(Path(cache_dir))
    statuses = {}
    for spec_record, folder in records:
        run_dir = Path(folder)
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / TRAIN_LOG, "a") as log_file:

            def log(message: str) -> None:
                log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
                log_file.flush()

            try:
                statuses[run_dir.name] = run(parse_spec(spec_record, str(run_dir / SPEC)), run_dir, log=log).status
            except Exception:
                log(traceback.format_exc())
                raise
    return {"statuses": statuses, "started": started, "ended": time.time()}


def connect(address: str | None, dashboard: bool = False, num_cpus: int | None = None):
    """Join the Ray cluster at `address`, or start an embedded one that listens on 127.0.0.1 only."""
    if not address:
        # Ray turns a node address of 127.0.0.1 into the machine's external one, and its servers then
        # listen on every interface, unless told the cluster is this one machine. This switch (read when
        # ray is imported, and inherited by every Ray process) keeps all of them on the loopback.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    if ray.is_initialized():
        return ray
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # in case ray was imported before the switch was set
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    return ray


def slots(ray, resources: Resources) -> int:
    """Runs the cluster can hold at once with these resources (at least 1)."""
    available = ray.cluster_resources()
    limits = [available.get("CPU", 1) // resources.cpus]
    if resources.gpus:
        limits.append(available.get("GPU", 0) // resources.gpus)
    if resources.tpus:
        limits.append(available.get("TPU", 0) // resources.tpus)
    return max(1, int(min(limits)))


def _preemption_errors(ray) -> tuple[type, ...]:
    """Errors that mean the worker or its node went away, not that the run is wrong."""
    e = ray.exceptions
    return (
        e.WorkerCrashedError,
        e.NodeDiedError,
        e.LocalRayletDiedError,
        e.ObjectLostError,
        e.OwnerDiedError,
        e.TaskCancelledError,
    )


def data_hash(dataset: PreparedDataset) -> str:
    return dataset.manifest["source"]["content_hash"]


def run_sweep(
    sweep: SweepSpec,
    runs_root: str | Path | None = None,
    address: str | None = None,
    max_parallel: int | None = None,
    report: Callable[[Progress], None] = lambda p: None,
    log: Callable[[str], None] = print,
    num_cpus: int | None = None,
    dashboard: bool = False,
) -> Summary:
    """Run every unfinished run of the sweep and collect runs.parquet; with `[sizes] refine`, then the sizes that
    bracket each budget's best run, round after round (scaling/sweep/refine.py)."""
    started = time.perf_counter()
    dataset = PreparedDataset.open(sweep.data)
    folder = sweep.folder(runs_root)
    plan = make_plan(sweep, dataset, read_refined(folder))
    check_sweep_record(sweep, folder, data_hash(dataset))
    progress = Progress(total=0)
    failed: dict[str, str] = {}
    timings: list[Timing] = []
    limit, seen = 1, set()
    while True:
        write_plan_record(plan, folder)
        queue, finished_before = _queue(plan, folder, progress, seen)
        if queue:
            round_failed, limit = _drive(
                plan,
                folder,
                queue,
                finished_before,
                progress,
                address,
                max_parallel,
                report,
                log,
                num_cpus,
                dashboard,
                timings,
            )
            failed |= round_failed
        elif len(seen) == len(plan.runs):  # the first round
            log(f"{sweep.name} v{sweep.version}: all {len(plan.runs)} runs finished already; nothing to train")
        if not sweep.sizes.refine:
            break
        _, frame, _ = write_runs_table(folder, spec_tasks=sweep.tasks)
        additions = next_widths(plan, frame)
        if not additions:
            break
        refined = read_refined(folder)
        for budget, width in additions.items():
            refined[budget] = tuple(refined.get(budget, ())) + (width,)
            log(f"refine: budget {budget:.3g}: adding width {width} to bracket its best run")
        write_refined(folder, refined)
        plan = make_plan(sweep, dataset, refined)
    table, _, _ = write_runs_table(folder, spec_tasks=sweep.tasks)
    report(progress)
    return Summary(
        folder=folder,
        runs_table=table,
        progress=progress,
        failed=failed,
        wall_seconds=time.perf_counter() - started,
        timings=tuple(timings),
        slots=limit,
    )


def _queue(plan: Plan, folder: Path, progress: Progress, seen: set[str]) -> tuple[list[Unit], set[str]]:
    """The plan's units with a run left to train, and the runs that had finished before (counted as skipped once)."""
    queue: list[Unit] = []
    finished_before: set[str] = set()  # not counted again when their unit's task ends
    for unit in plan.units():
        states = [run_state(folder / r.run_id, r.spec.tasks, r.candidate.steps).finished for r in unit.runs]
        fresh = [r.run_id not in seen for r in unit.runs]
        progress.total += sum(fresh)
        progress.skipped += sum(done and new for done, new in zip(states, fresh, strict=True))
        seen |= {r.run_id for r in unit.runs}
        finished_before |= {r.run_id for r, done in zip(unit.runs, states, strict=True) if done}
        if not all(states):
            for r in unit.runs:
                RunFolder(folder / r.run_id).clear_failed()
            queue.append(unit)
            progress.flops_total += sum(r.flops_spent for r, done in zip(unit.runs, states, strict=True) if not done)
    # Longest first (largest budget; within it the smallest model, which takes the most steps), so the
    # last wave is short runs and slots do not idle behind one long straggler; a trunk's unit goes by its compute.
    queue.sort(key=lambda u: (-u.flops if u.trunk else -u.runs[0].budget, u.runs[0].candidate.width, u.runs[0].seed))
    return queue, finished_before


def _drive(
    plan: Plan,
    folder: Path,
    queue: list[Unit],
    finished_before: set[str],
    progress: Progress,
    address,
    max_parallel,
    report,
    log,
    num_cpus,
    dashboard,
    timings: list[Timing],
) -> tuple[dict[str, str], int]:
    sweep = plan.sweep
    ray = connect(address, dashboard, num_cpus)
    resources = sweep.resources
    options = {"num_cpus": resources.cpus, "num_gpus": resources.gpus, "max_retries": 0}
    env = worker_env(resources)
    if resources.tpus:
        options["resources"] = {"TPU": resources.tpus}
    if resources.accelerator_type:
        options["accelerator_type"] = resources.accelerator_type
    # On an accelerator, one task per worker process: the device (and its memory) is released when the task ends.
    # Ray takes max_calls in ray.remote only (`.options` refuses it).
    accelerated = bool(resources.gpus or resources.tpus)
    task = (ray.remote(max_calls=1)(execute_unit) if accelerated else ray.remote(execute_unit)).options(**options)
    limit = max_parallel or slots(ray, resources)
    cache = str(folder.parent.parent / ".jax_cache")  # under the runs root: every sweep there shares compiled steps
    preempted = {u.name: 0 for u in queue}
    errors = {u.name: 0 for u in queue}
    in_flight: dict = {}
    submitted: dict = {}
    failed: dict[str, str] = {}
    to_do = sum(r.run_id not in finished_before for u in queue for r in u.runs)
    tasks = f" in {len(queue)} tasks (WSD trunks with their branches)" if any(u.trunk for u in queue) else ""
    log(f"{sweep.name} v{sweep.version}: {to_do} of {progress.total} runs to do{tasks}, {limit} at a time")
    while queue or in_flight:
        while queue and len(in_flight) < limit:
            unit = queue.pop(0)
            records = [(r.spec, r.run_id) for r in unit.runs]
            if unit.trunk:
                records.insert(0, (unit.trunk.spec, unit.trunk.run_id))
            # as TOML/JSON gives it
            ref = task.remote(
                [(json.loads(json.dumps(spec.to_dict())), str(folder / rid)) for spec, rid in records], cache, env
            )
            in_flight[ref] = unit
            submitted[ref] = time.time()
        progress.running = len(in_flight)
        report(progress)
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
        for ref in ready:
            unit = in_flight.pop(ref)
            sent = submitted.pop(ref)
            try:
                outcome = ray.get(ref)
            except _preemption_errors(ray) as error:
                for r in _unfinished(folder, unit):
                    RunFolder(folder / r.run_id).record_attempt("preemptions", f"{type(error).__name__}: {error}")
                preempted[unit.name] += 1
                progress.preemptions += 1
                if preempted[unit.name] > sweep.retries.preemptions:
                    message = f"lost its worker {preempted[unit.name]} times: {error}"
                    _fail(folder, unit, finished_before, message, failed, progress, log)
                else:
                    log(f"{unit.name}: worker lost ({type(error).__name__}); retrying from its checkpoint")
                    queue.insert(0, unit)
                continue
            except ray.exceptions.RayError as error:
                message = _cause(error)
                for r in _unfinished(folder, unit):
                    RunFolder(folder / r.run_id).record_attempt("failures", message)
                errors[unit.name] += 1
                if errors[unit.name] > sweep.retries.failures:
                    _fail(folder, unit, finished_before, message, failed, progress, log)
                else:
                    progress.retried_failures += 1
                    log(f"{unit.name}: failed ({message.splitlines()[-1] if message else ''}); trying again")
                    queue.append(unit)
                continue
            timings.append(Timing(unit.name, sent, outcome["started"], outcome["ended"]))
            for r in (r for r in unit.runs if r.run_id not in finished_before):
                progress.flops_done += r.flops_spent
                if outcome["statuses"].get(r.run_id) == "diverged":
                    progress.diverged += 1
                    log(f"{r.run_id}: diverged")
                else:
                    progress.done += 1
    progress.running = 0
    return failed, limit


def _unfinished(folder: Path, unit: Unit) -> list:
    return [r for r in unit.runs if not run_state(folder / r.run_id, r.spec.tasks, r.candidate.steps).finished]


def _fail(folder: Path, unit: Unit, before: set[str], message: str, failed: dict, progress: Progress, log) -> None:
    """Mark the unit's unfinished runs failed (a trunk's failure fails every branch still to train)."""
    for r in _unfinished(folder, unit):
        RunFolder(folder / r.run_id).mark_failed(message)
        failed[r.run_id] = message
        progress.failed += 1
        progress.flops_done += r.flops_spent
        log(f"{r.run_id}: failed: {message.splitlines()[-1] if message else ''}")
    for r in unit.runs:  # those the task finished before it failed
        if r.run_id not in failed and r.run_id not in before:
            progress.done += 1
            progress.flops_done += r.flops_spent


def _cause(error) -> str:
    """The run's own exception, without Ray's wrapping: what the user needs to fix."""
    cause = getattr(error, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return f"{type(error).__name__}: {error}"
