"""`ehrscale sweep submit`: send the sweep driver to an existing Ray cluster through Ray Jobs.

The job runs `python -m scaling sweep run sweeps/A.toml [sweeps/B.toml ...] --address auto` on the cluster:
several specs share one driver and one queue, as for `sweep run`. Its working directory is a staged copy
of this checkout's packages (scaling/, analysis/) and the specs, so the
cluster runs exactly this code; the cluster's Python needs ehrscale's dependencies
(docs/cluster.md). Data and runs_root must be absolute paths every node sees: a relative path
would land in the job's temporary copy.

Token authentication (on by default from Ray 2.60 on local clusters, and what a shared cluster
should use): the token comes from --token-file, else RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
~/.ray/auth_token, and travels as `Authorization: Bearer <token>`.
"""

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import scaling
from scaling.data.atomic import write_json
from scaling.sweep.spec import SweepSpec

PACKAGES = ("scaling", "analysis")
SUBMITTED = "submitted.json"  # in the sweep folder: the Ray job that drives it, for `sweep status`


class SubmitError(Exception):
    """A sweep that cannot be submitted as asked; the message says what to change."""


def stage(specs: list[Path]) -> Path:
    """A temporary working directory for the job: this ehrscale's packages and the specs under sweeps/."""
    names = [Path(spec).name for spec in specs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:  # the job's sweeps/ folder is flat: two files of one name would overwrite each other
        raise SubmitError(f"two specs are named {twice[0]}; rename one (the job's sweeps/ folder holds both)")
    source = Path(scaling.__file__).resolve().parent.parent
    folder = Path(tempfile.mkdtemp(prefix="ehrscale-job-"))
    for package in PACKAGES:
        shutil.copytree(source / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "sweeps").mkdir()
    for spec in specs:
        shutil.copy2(spec, folder / "sweeps" / Path(spec).name)
    return folder


def find_token(token_file: Path | None) -> str | None:
    """The cluster token, from the first of --token-file, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if token_file is not None:
        if not Path(token_file).is_file():
            raise SubmitError(f"--token-file {token_file}: no such file")
        return Path(token_file).read_text().strip()
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    for path in (os.environ.get("RAY_AUTH_TOKEN_PATH"), Path.home() / ".ray" / "auth_token"):
        if path and Path(path).is_file():
            return Path(path).read_text().strip()
    return None


def entrypoint(spec_paths: list[str], runs_root: str | None, max_parallel: int | None) -> str:
    command = ["python", "-m", "scaling", "sweep", "run", *spec_paths, "--address", "auto"]
    if runs_root:
        command += ["--runs-root", runs_root]
    if max_parallel:
        command += ["--max-parallel", str(max_parallel)]
    return " ".join(command)


def submit(
    sweeps: list[SweepSpec],
    specs: list[Path],
    address: str,
    runs_root: str | None = None,
    max_parallel: int | None = None,
    token_file: Path | None = None,
):
    """Submit one driver for the sweeps as a Ray job, record it in each sweep's folder (submitted.json); return
    (job id, client)."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    for sweep, spec in zip(sweeps, specs, strict=True):
        for key, value in (("data", sweep.data), ("runs_root", runs_root or sweep.runs_root)):
            if not Path(value).is_absolute():
                raise SubmitError(
                    f"{spec}: '{key}' is {value!r}; a cluster job needs an absolute path that every node sees "
                    f"(shared storage), or the runs land in the job's temporary copy of the working directory"
                    + (" (override it with --runs-root)" if key == "runs_root" else "")
                )
    token = find_token(token_file)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    staged = stage(specs)
    try:
        client = JobSubmissionClient(address, headers=headers)
        job_id = client.submit_job(
            entrypoint=entrypoint([f"sweeps/{Path(spec).name}" for spec in specs], runs_root, max_parallel),
            runtime_env={"working_dir": str(staged)},
            metadata={
                "sweeps": ", ".join(sweep.name for sweep in sweeps),
                "versions": ", ".join(str(sweep.version) for sweep in sweeps),
            },
        )
    except AuthenticationError as error:
        raise SubmitError(
            f"could not submit to {address}: {str(error).splitlines()[0]}. The cluster wants its token: "
            "pass --token-file, or set RAY_AUTH_TOKEN (`ray get-auth-token` on the head prints it)"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as error:
        text = str(error)
        raise SubmitError(
            f"could not submit to {address}: {text.splitlines()[0] if text else type(error).__name__}"
        ) from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # uploaded by now
    for sweep in sweeps:
        record_job(sweep.folder(runs_root), job_id, address)
    return job_id, client


def record_job(folder: Path, job_id: str, address: str) -> Path | None:
    """Note the driver job in the sweep folder (the shared storage the runs go to), when this machine can write it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / SUBMITTED, {"format": 1, "job_id": job_id, "address": address, "submitted": time.time()})
        return folder / SUBMITTED
    except OSError:  # the runs' storage is not mounted here: `sweep status --address` cannot find the job then
        return None


def job_status(folder: Path, address: str | None = None, token_file: Path | None = None, tail: int = 15) -> list[str]:
    """Lines on the driver job of a submitted sweep: its state, and the end of its log when it failed; [] if the
    sweep was not submitted."""
    path = Path(folder) / SUBMITTED
    if not path.exists():
        return []
    record = json.loads(path.read_text())
    address = address or record["address"]
    from ray.job_submission import JobStatus, JobSubmissionClient

    try:
        token = find_token(token_file)
        client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"} if token else None)
        info = client.get_job_info(record["job_id"])
    except Exception as error:  # any failure to reach the cluster: say so, the folder's state above still stands
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        return [f"driver job {record['job_id']} on {address}: cannot ask the cluster ({text[:200]})"]
    lines = [
        f"driver job {record['job_id']} on {address}: {info.status.value}"
        + (f" ({info.message})" if info.message and info.status != JobStatus.RUNNING else "")
    ]
    if info.status in (JobStatus.FAILED, JobStatus.STOPPED):
        logs = client.get_job_logs(record["job_id"]).rstrip().splitlines()
        lines += ["its last log lines:"] + [f"  {line}" for line in logs[-tail:]]
        lines.append("runs still pending will not start until the sweep is submitted (or run) again")
    return lines


def follow(client, job_id: str, write, poll_seconds: float = 2.0) -> str:
    """Print the job's log as it grows until the job ends; return its final status."""
    from ray.job_submission import JobStatus

    shown = 0
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            write(logs[shown:])
            shown = len(logs)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status.value)
        time.sleep(poll_seconds)
