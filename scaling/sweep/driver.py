"""Run a sweep on Ray: one task per run (or per WSD trunk and its branches), on an embedded cluster or one joined
at an address.

The driver never imports JAX (a worker does, inside its task), so it holds no accelerator. It
asks each run folder where it stands, submits what is not finished, and retries: a lost worker
(a preemption, a node gone) is retried up to `[retries] preemptions` times and resumes from its
checkpoint; an error in the run up to `[retries] failures` times, then the run is marked failed
with its error and the others go on. Kill the driver at any point and run it again: finished runs
are skipped and half-done ones resume.
"""

import dataclasses
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scaling.data.atomic import temporary_sibling
from scaling.data.dataset import PreparedDataset
from scaling.record import SPEC, TRAIN_LOG, RunFolder
from scaling.runspec import Evaluation, SpecError
from scaling.sweep.plan import Plan, PlannedRun, Unit, make_plan
from scaling.sweep.refine import next_widths, read_refined, write_refined
from scaling.sweep.spec import GPU_SHARE_USABLE, Resources, SweepSpec
from scaling.sweep.state import check_sweep_record, run_state, write_plan_record, write_runs_table
from scaling.sweep.throughput import Throughput, measured_throughput, planned_seconds

CPU_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


@dataclass
class Progress:
    """Counts a progress view shows, and the plan's estimate of the work (seconds of one slot) to time it by."""

    total: int
    skipped: int = 0
    done: int = 0
    diverged: int = 0
    failed: int = 0
    running: int = 0
    preemptions: int = 0
    retried_failures: int = 0
    estimated_total: float = 0.0  # the plan's seconds (one slot) of the runs this command trains
    estimated_done: float = 0.0  # ... of those that ended
    slots: int = 1
    started: float = field(default_factory=time.perf_counter)

    @property
    def eta_seconds(self) -> float | None:
        """Time left: the plan's estimate of what is left, corrected by the measured speed of what ended."""
        left = self.estimated_total - self.estimated_done
        if left <= 0:
            return 0.0 if self.estimated_total else None
        if not self.estimated_done:  # nothing measured yet: the plan's own estimate over the slots
            return left / self.slots
        return (time.perf_counter() - self.started) * left / self.estimated_done

    def line(self) -> str:
        eta = self.eta_seconds
        return (
            f"done {self.done + self.skipped}/{self.total} (skipped {self.skipped}) · running {self.running} · "
            f"failed {self.failed} · diverged {self.diverged} · preempted {self.preemptions}"
            + (f" · ETA {eta / 60:.1f} min" if eta is not None else "")
        )


def combined(progresses: "list[Progress]") -> Progress:
    """Several sweeps' progress as one: counts and estimates added, the most slots, the earliest start."""
    out = Progress(total=0, slots=max((p.slots for p in progresses), default=1))
    for name in (f.name for f in dataclasses.fields(Progress) if f.name not in ("slots", "started")):
        setattr(out, name, sum(getattr(p, name) for p in progresses))
    out.started = min((p.started for p in progresses), default=out.started)
    return out


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


@dataclass
class _Sweep:
    """One sweep's place in a driver's queue: its plan, folder and what its runs did."""

    spec: SweepSpec
    dataset: PreparedDataset
    folder: Path
    plan: Plan
    throughput: Throughput
    progress: Progress = field(default_factory=lambda: Progress(total=0))
    seen: set[str] = field(default_factory=set)
    finished_before: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    futures_only: set[str] = field(default_factory=set)  # frontier runs whose unit generates futures, trained before
    timings: list[Timing] = field(default_factory=list)
    preempted: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    log: Callable[[str], None] = print

    @property
    def name(self) -> str:
        return f"{self.spec.name} v{self.spec.version}"

    def unit_seconds(self, unit: Unit, runs: "list[PlannedRun] | None" = None) -> float:
        """The plan's wall seconds of one slot for the unit's runs (all of them by default)."""
        return sum(
            planned_seconds(self.throughput, r.candidate, r.spec.steps_spent(r.candidate.steps), len(r.spec.tasks))
            for r in (unit.runs if runs is None else runs)
        )


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
    return run_sweeps([sweep], runs_root, address, max_parallel, report, log, num_cpus, dashboard)[0]


def run_sweeps(
    sweeps: Sequence[SweepSpec],
    runs_root: str | Path | None = None,
    address: str | None = None,
    max_parallel: int | None = None,
    report: Callable[[Progress], None] = lambda p: None,
    log: Callable[[str], None] = print,
    num_cpus: int | None = None,
    dashboard: bool = False,
) -> list[Summary]:
    """Run several sweeps through one queue, so that no slot idles at one grid's tail while another's runs wait;
    each keeps its own folder, records and runs.parquet. `report` sees their progress as one."""
    started = time.perf_counter()
    states: list[_Sweep] = []
    for sweep in sweeps:
        folder = sweep.folder(runs_root)
        if any(s.folder == folder for s in states):
            raise SpecError(f"{sweep.name} v{sweep.version} is given twice ({folder})")
        dataset = PreparedDataset.open(sweep.data)
        plan = make_plan(sweep, dataset, read_refined(folder))
        check_zero_shot_rules(sweep, dataset)
        check_sweep_record(sweep, folder, data_hash(dataset))
        states.append(_Sweep(sweep, dataset, folder, plan, measured_throughput(folder.parent.parent, sweep), log=log))
    limit = 1
    active = list(states)
    first_round = True

    def report_all() -> None:
        report(combined([s.progress for s in states]))

    def drive(queue: list[tuple[_Sweep, Unit]], announce: bool = True) -> int:
        return _drive(queue, address, max_parallel, report_all, log, num_cpus, dashboard, announce)

    while active:
        queue: list[tuple[_Sweep, Unit]] = []
        for state in active:
            write_plan_record(state.plan, state.folder)
            units = _queue(state)
            if not units and first_round:
                log(f"{state.name}: all {len(state.plan.runs)} runs finished already; nothing to train")
            queue += [(state, unit) for unit in units]
        # Longest first (the plan's estimate of each task's time), so the last wave is short runs and slots do not
        # idle behind one long straggler; several sweeps interleave.
        queue.sort(key=lambda item: -item[0].unit_seconds(item[1]))
        if queue:
            limit = drive(queue)
        first_round = False
        active = [state for state in active if _refine(state, log)]
    # [eval] zero_shot with runs = "frontier": each budget's best run generates its futures, now that all are known
    frontier = [(state, unit) for state in states for unit in _frontier_units(state)]
    if frontier:
        limit = drive(frontier, announce=False)
    summaries = []
    for state in states:
        table, _, _ = write_runs_table(state.folder, spec_tasks=state.spec.tasks)
        state.progress.slots = limit
        summaries.append(
            Summary(
                folder=state.folder,
                runs_table=table,
                progress=state.progress,
                failed=state.failed,
                wall_seconds=time.perf_counter() - started,
                timings=tuple(state.timings),
                slots=limit,
            )
        )
    report(combined([s.progress for s in states]))
    return summaries


def _refine(state: _Sweep, log: Callable[[str], None]) -> bool:
    """With `[sizes] refine`: add the sizes that bracket each budget's best run to the plan; whether any was added."""
    if not state.spec.sizes.refine:
        return False
    _, frame, _ = write_runs_table(state.folder, spec_tasks=state.spec.tasks)
    additions = next_widths(state.plan, frame)
    if not additions:
        return False
    refined = read_refined(state.folder)
    for budget, width in additions.items():
        refined[budget] = tuple(refined.get(budget, ())) + (width,)
        log(f"refine: budget {budget:.3g}: adding width {width} to bracket its best run")
    write_refined(state.folder, refined)
    state.plan = make_plan(state.spec, state.dataset, refined)
    return True


def check_zero_shot_rules(sweep: SweepSpec, dataset: PreparedDataset) -> None:
    """Refuse, before anything trains, a sweep whose [eval] zero_shot has a task without a rule."""
    settings = sweep.eval.zero_shot
    if settings is None:
        return
    from scaling.eval.zero_shot_rules import RuleError, built_in_rules, read_rules, rule_for

    try:
        users = read_rules(Path(settings.rules)) if settings.rules else {}
        built = built_in_rules(dataset.task_config())
        for task in sweep.tasks:
            rule_for(task, built, users)
    except RuleError as error:
        raise SpecError(f"{sweep.source}: [eval] zero_shot: {error} (in a sweep: zero_shot = {{ rules = ... }})")


def _frontier_units(state: _Sweep) -> list[Unit]:
    """With [eval] zero_shot runs = "frontier": a unit for each budget's lowest-loss run that has not generated its
    futures yet. Its spec asks them at the run's end, so the worker skips the finished training and generates."""
    settings = state.spec.eval.zero_shot
    if settings is None or settings.runs != "frontier" or not state.spec.tasks:
        return []
    import polars as pl

    from analysis.downstream import frontier_rows

    _, frame, _ = write_runs_table(state.folder, spec_tasks=state.spec.tasks)
    best = frontier_rows(frame.filter((pl.col("status") == "ok") & pl.col("loss").is_not_null()))["run_id"]
    planned = {r.run_id: r for r in state.plan.runs}
    at_end = Evaluation(dataclasses.replace(settings, runs="every"))
    units = [
        Unit(runs=(dataclasses.replace(planned[run_id], spec=dataclasses.replace(planned[run_id].spec, eval=at_end)),))
        for run_id in best
        if run_id in planned and not set(state.spec.tasks) <= RunFolder(state.folder / run_id).zero_shot_tasks()
    ]
    if units:
        state.finished_before |= {u.name for u in units}  # trained already: the progress counts each run once
        state.futures_only |= {u.name for u in units}
        state.log(
            f"{state.name}: zero-shot futures of {len(units)} frontier runs (each budget's lowest loss): "
            + ", ".join(u.name for u in units)
        )
    return units


def _queue(state: _Sweep) -> list[Unit]:
    """The plan's units with a run left to train; the runs that had finished before are counted as skipped once."""
    queue: list[Unit] = []
    progress, folder = state.progress, state.folder
    copied = [r.run_id for unit in state.plan.units() if not unit.trunk for r in unit.runs if _reuse(state, r)]
    if copied:
        state.log(
            f"{state.name}: {len(copied)} runs copied from other sweeps under {folder.parent.parent} (the same spec "
            "finished there): " + ", ".join(copied)
        )
    for unit in state.plan.units():
        states = [
            run_state(folder / r.run_id, r.spec.tasks, r.candidate.steps, zero_shot=r.spec.eval.at_run_end).finished
            for r in unit.runs
        ]
        fresh = [r.run_id not in state.seen for r in unit.runs]
        progress.total += sum(fresh)
        progress.skipped += sum(done and new for done, new in zip(states, fresh, strict=True))
        state.seen |= {r.run_id for r in unit.runs}
        state.finished_before |= {r.run_id for r, done in zip(unit.runs, states, strict=True) if done}
        if not all(states):
            for r in unit.runs:
                RunFolder(folder / r.run_id).clear_failed()
            queue.append(unit)
            progress.estimated_total += state.unit_seconds(
                unit, [r for r, done in zip(unit.runs, states, strict=True) if not done]
            )
    return queue


def _reuse(state: _Sweep, run: PlannedRun) -> bool:
    """Copy a finished run of the same spec from another sweep under the same runs root instead of training it again
    (the same fingerprint, probe rows, [eval] and tasks settled); a WSD branch or trunk is never copied (its cost is
    shared with its trunk's other branches, which differ between sweeps)."""
    here = state.folder / run.run_id
    if here.exists() or run.spec.branch is not None or run.spec.branch_points:
        return False
    fingerprint = run.spec.fingerprint(state.dataset.run_hash)
    for other in sorted(state.folder.parent.parent.glob(f"*/*/{run.run_id}")):
        start = RunFolder(other).start() if other.parent != state.folder else None
        if (
            start is None
            or start.fingerprint != fingerprint
            or start.spec.get("probe_train_rows") != run.spec.probe_train_rows
            or (start.spec.get("eval") or {}).get("zero_shot") != run.spec.to_dict()["eval"]["zero_shot"]
            or not run_state(other, run.spec.tasks, run.candidate.steps, zero_shot=run.spec.eval.at_run_end).finished
        ):
            continue
        tmp = temporary_sibling(here)
        shutil.copytree(other, tmp, dirs_exist_ok=True)
        with open(tmp / TRAIN_LOG, "a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} copied from {other}: the same spec finished there\n")
        tmp.rename(here)
        return True
    return False


def _task_options(ray, resources: Resources, env: dict[str, str] | None = None):
    """The Ray task that trains a unit with these resources (in workers started with `env`, if given)."""
    options = {"num_cpus": resources.cpus, "num_gpus": resources.gpus, "max_retries": 0}
    if env is not None:
        options["runtime_env"] = {"env_vars": env}
    if resources.tpus:
        options["resources"] = {"TPU": resources.tpus}
    if resources.accelerator_type:
        options["accelerator_type"] = resources.accelerator_type
    # On an accelerator, one task per worker process: the device (and its memory) is released when the task ends.
    # Ray takes max_calls in ray.remote only (`.options` refuses it).
    accelerated = bool(resources.gpus or resources.tpus)
    return (ray.remote(max_calls=1)(execute_unit) if accelerated else ray.remote(execute_unit)).options(**options)


def _room(available: dict[str, float], in_use: dict[str, float], resources: Resources) -> bool:
    """Whether the cluster (`available`: its resources) holds one more run with these resources beside those in
    flight."""
    asks = {"CPU": resources.cpus, "GPU": resources.gpus, "TPU": resources.tpus}
    return all(in_use.get(k, 0.0) + v <= available.get(k, 0.0) + 1e-9 for k, v in asks.items() if v)


def _drive(
    queue: list[tuple[_Sweep, Unit]], address, max_parallel, report, log, num_cpus, dashboard, announce=True
) -> int:
    """Train the queue's units in order, as many at a time as the cluster holds beside those in flight (at most
    `max_parallel`); returns that limit. `announce`: say what each sweep has to do (not for frontier futures)."""
    ray = connect(address, dashboard, num_cpus)
    sweeps = list({id(s): s for s, _ in queue}.values())
    envs = {id(s): worker_env(s.spec.resources) for s in sweeps}
    # A worker keeps the settings JAX was imported with. Sweeps that need different ones get workers of their own
    # (a Ray runtime_env each, which starts them: seconds), so that no run inherits another sweep's settings.
    separate = len({tuple(sorted(e.items())) for e in envs.values()}) > 1
    tasks = {id(s): _task_options(ray, s.spec.resources, envs[id(s)] if separate else None) for s in sweeps}
    limit = max_parallel or max(slots(ray, s.spec.resources) for s in sweeps)
    for state in sweeps:
        units = [u for s, u in queue if s is state]
        to_do = sum(r.run_id not in state.finished_before for u in units for r in u.runs)
        trunks = f" in {len(units)} tasks (WSD trunks with their branches)" if any(u.trunk for u in units) else ""
        if announce:
            log(f"{state.name}: {to_do} of {state.progress.total} runs to do{trunks}, {limit} at a time")
        state.progress.slots = limit
        state.preempted |= {u.name: 0 for u in units}
        state.errors |= {u.name: 0 for u in units}
    if len(sweeps) > 1 and announce:
        log(f"one queue for {len(sweeps)} sweeps: {len(queue)} tasks, longest first")
    in_flight: dict = {}
    while queue or in_flight:
        in_use = _in_use(state.spec.resources for state, _, _ in in_flight.values())
        available = ray.cluster_resources() if queue and len(in_flight) < limit else {}
        while queue and len(in_flight) < limit:
            # the first (longest) unit that fits beside those in flight; with none in flight, the first (Ray queues it)
            pick = next((i for i, (s, _) in enumerate(queue) if _room(available, in_use, s.spec.resources)), None)
            if pick is None and in_flight:
                break
            state, unit = queue.pop(pick or 0)
            records = [(r.spec, r.run_id) for r in unit.runs]
            if unit.trunk:
                records.insert(0, (unit.trunk.spec, unit.trunk.run_id))
            cache = str(state.folder.parent.parent / ".jax_cache")  # under the runs root: every sweep shares steps
            ref = tasks[id(state)].remote(  # the specs as TOML/JSON gives them
                [(json.loads(json.dumps(spec.to_dict())), str(state.folder / rid)) for spec, rid in records],
                cache,
                envs[id(state)],
            )
            in_flight[ref] = (state, unit, time.time())
            in_use = _in_use(s.spec.resources for s, _, _ in in_flight.values())
        for state in sweeps:
            state.progress.running = sum(s is state for s, _, _ in in_flight.values())
        report()
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
        for ref in ready:
            state, unit, sent = in_flight.pop(ref)
            state.progress.running -= 1
            _settle(ray, ref, state, unit, sent, queue, log)
    for state in sweeps:
        state.progress.running = 0
    return limit


def _in_use(asked) -> dict[str, float]:
    """The cluster's resources the runs in flight hold."""
    used: dict[str, float] = {}
    for r in asked:
        for key, amount in (("CPU", r.cpus), ("GPU", r.gpus), ("TPU", r.tpus)):
            used[key] = used.get(key, 0.0) + amount
    return used


def _settle(ray, ref, state: _Sweep, unit: Unit, sent: float, queue: list, log) -> None:
    """Record how a unit's task ended: its runs done or diverged, or the unit retried, or its runs failed."""
    folder, sweep, progress = state.folder, state.spec, state.progress
    try:
        outcome = ray.get(ref)
    except _preemption_errors(ray) as error:
        for r in _unfinished(folder, unit):
            RunFolder(folder / r.run_id).record_attempt("preemptions", f"{type(error).__name__}: {error}")
        state.preempted[unit.name] += 1
        progress.preemptions += 1
        if state.preempted[unit.name] > sweep.retries.preemptions:
            _fail(state, unit, f"lost its worker {state.preempted[unit.name]} times: {error}", log)
        else:
            log(f"{unit.name}: worker lost ({type(error).__name__}); retrying from its checkpoint")
            queue.insert(0, (state, unit))
        return
    except ray.exceptions.RayError as error:
        message = _cause(error)
        for r in _unfinished(folder, unit):
            RunFolder(folder / r.run_id).record_attempt("failures", message)
        state.errors[unit.name] += 1
        if state.errors[unit.name] > sweep.retries.failures:
            _fail(state, unit, message, log)
        else:
            progress.retried_failures += 1
            log(f"{unit.name}: failed ({message.splitlines()[-1] if message else ''}); trying again")
            queue.append((state, unit))
        return
    state.timings.append(Timing(unit.name, sent, outcome["started"], outcome["ended"]))
    for r in (r for r in unit.runs if r.run_id not in state.finished_before):
        progress.estimated_done += state.unit_seconds(unit, [r])
        if outcome["statuses"].get(r.run_id) == "diverged":
            progress.diverged += 1
            log(f"{r.run_id}: diverged")
        else:
            progress.done += 1


def _unfinished(folder: Path, unit: Unit) -> list:
    return [
        r
        for r in unit.runs
        if not run_state(folder / r.run_id, r.spec.tasks, r.candidate.steps, zero_shot=r.spec.eval.at_run_end).finished
    ]


def _fail(state: _Sweep, unit: Unit, message: str, log) -> None:
    """Mark the unit's unfinished runs failed (a trunk's failure fails every branch still to train); a frontier run
    whose futures failed stays as trained (its loss still counts), the error in the log."""
    progress = state.progress
    if unit.name in state.futures_only:
        log(f"{unit.name}: zero-shot futures failed, the run stays as trained: {message.splitlines()[-1]}")
        return
    for r in _unfinished(state.folder, unit):
        RunFolder(state.folder / r.run_id).mark_failed(message)
        state.failed[r.run_id] = message
        progress.failed += 1
        progress.estimated_done += state.unit_seconds(unit, [r])
        log(f"{r.run_id}: failed: {message.splitlines()[-1] if message else ''}")
    for r in unit.runs:  # those the task finished before it failed
        if r.run_id not in state.failed and r.run_id not in state.finished_before:
            progress.done += 1
            progress.estimated_done += state.unit_seconds(unit, [r])


def _cause(error) -> str:
    """The run's own exception, without Ray's wrapping: what the user needs to fix."""
    cause = getattr(error, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return f"{type(error).__name__}: {error}"
