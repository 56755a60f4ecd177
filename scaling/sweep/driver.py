"""Run a sweep on Ray: one task per run, on an embedded cluster or one joined at an address.

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
from scaling.sweep.plan import Plan, PlannedRun, make_plan
from scaling.sweep.spec import Resources, SweepSpec
from scaling.sweep.state import (
    check_sweep_record,
    clear_failed,
    mark_failed,
    record_attempt,
    run_state,
    write_plan_record,
    write_runs_table,
)

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
    if resources.shares_gpu:  # runs sharing a GPU must not each grab 75% of its memory
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return env


def execute_run(spec_record: dict, run_dir: str, cache_dir: str, env: dict[str, str] | None = None) -> dict:
    """Body of a run's Ray task: train (or resume, or skip), evaluate, and say how it ended and when."""
    started = time.time()
    # The worker's settings, set before JAX is first imported in this process. They come as an
    # argument, not as a Ray runtime_env: a runtime_env makes Ray start a dedicated worker for each
    # task (seconds each), where Ray's idle workers can take the task at once. A CPU worker reused
    # for the next run keeps the JAX it imported, with the same settings (the same sweep's).
    os.environ.update(env or {})
    from scaling.run import run  # JAX is imported here, in the worker, never in the driver
    from scaling.runspec import parse_spec
    from scaling.train import enable_compilation_cache

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    enable_compilation_cache(Path(cache_dir))
    with open(run_dir / "train.log", "a") as log_file:

        def log(message: str) -> None:
            log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
            log_file.flush()

        try:
            result = run(parse_spec(spec_record, str(run_dir / "spec.json")), run_dir, log=log)
        except Exception:
            log(traceback.format_exc())
            raise
    return {"status": result["status"], "started": started, "ended": time.time()}


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
    """Run every unfinished run of the sweep and collect runs.parquet."""
    started = time.perf_counter()
    dataset = PreparedDataset.open(sweep.data)
    plan = make_plan(sweep, dataset)
    folder = sweep.folder(runs_root)
    check_sweep_record(sweep, folder, data_hash(dataset))
    write_plan_record(plan, folder)
    progress = Progress(total=len(plan.runs))
    queue: list[PlannedRun] = []
    for planned in plan.runs:
        run_dir = folder / planned.run_id
        if run_state(run_dir, planned.spec.tasks, planned.candidate.steps).finished:
            progress.skipped += 1
        else:
            clear_failed(run_dir)
            queue.append(planned)
            progress.flops_total += planned.candidate.flops
    # Longest first (largest budget; within it the smallest model, which takes the most steps), so the
    # last wave is short runs and slots do not idle behind one long straggler.
    queue.sort(key=lambda r: (-r.budget, r.candidate.width, r.seed))
    failed: dict[str, str] = {}
    timings: list[Timing] = []
    limit = 1
    if queue:
        failed, limit = _drive(
            plan, folder, queue, progress, address, max_parallel, report, log, num_cpus, dashboard, timings
        )
    else:
        log(f"{sweep.name} v{sweep.version}: all {len(plan.runs)} runs finished already; nothing to train")
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


def _drive(
    plan: Plan,
    folder: Path,
    queue: list[PlannedRun],
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
    if resources.gpus or resources.tpus:
        options["max_calls"] = 1  # one run per worker process: the accelerator is released when it ends
    task = ray.remote(execute_run).options(**options)
    limit = max_parallel or slots(ray, resources)
    cache = str(folder.parent.parent / ".jax_cache")  # under the runs root: every sweep there shares compiled steps
    preempted = {r.run_id: 0 for r in queue}
    errors = {r.run_id: 0 for r in queue}
    in_flight: dict = {}
    submitted: dict = {}
    failed: dict[str, str] = {}
    log(f"{sweep.name} v{sweep.version}: {len(queue)} of {progress.total} runs to do, {limit} at a time")
    while queue or in_flight:
        while queue and len(in_flight) < limit:
            planned = queue.pop(0)
            ref = task.remote(
                json.loads(json.dumps(planned.spec.to_dict())), str(folder / planned.run_id), cache, env
            )  # as TOML/JSON gives it
            in_flight[ref] = planned
            submitted[ref] = time.time()
        progress.running = len(in_flight)
        report(progress)
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
        for ref in ready:
            planned = in_flight.pop(ref)
            sent = submitted.pop(ref)
            run_dir = folder / planned.run_id
            try:
                outcome = ray.get(ref)
            except _preemption_errors(ray) as error:
                record_attempt(run_dir, "preemptions", f"{type(error).__name__}: {error}")
                preempted[planned.run_id] += 1
                progress.preemptions += 1
                if preempted[planned.run_id] > sweep.retries.preemptions:
                    _fail(
                        run_dir,
                        planned,
                        f"lost its worker {preempted[planned.run_id]} times: {error}",
                        failed,
                        progress,
                        log,
                    )
                else:
                    log(f"{planned.run_id}: worker lost ({type(error).__name__}); retrying from its checkpoint")
                    queue.insert(0, planned)
                continue
            except ray.exceptions.RayError as error:
                message = _cause(error)
                record_attempt(run_dir, "failures", message)
                errors[planned.run_id] += 1
                if errors[planned.run_id] > sweep.retries.failures:
                    _fail(run_dir, planned, message, failed, progress, log)
                else:
                    progress.retried_failures += 1
                    log(f"{planned.run_id}: failed ({message.splitlines()[-1] if message else ''}); trying again")
                    queue.append(planned)
                continue
            progress.flops_done += planned.candidate.flops
            timings.append(Timing(planned.run_id, sent, outcome["started"], outcome["ended"]))
            if outcome["status"] == "diverged":
                progress.diverged += 1
                log(f"{planned.run_id}: diverged")
            else:
                progress.done += 1
    progress.running = 0
    return failed, limit


def _fail(run_dir: Path, planned: PlannedRun, message: str, failed: dict, progress: Progress, log) -> None:
    mark_failed(run_dir, message)
    failed[planned.run_id] = message
    progress.failed += 1
    progress.flops_done += planned.candidate.flops
    log(f"{planned.run_id}: failed: {message.splitlines()[-1] if message else ''}")


def _cause(error) -> str:
    """The run's own exception, without Ray's wrapping: what the user needs to fix."""
    cause = getattr(error, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return f"{type(error).__name__}: {error}"
