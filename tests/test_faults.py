"""Fault injection (`pytest -m faults`; the rest of the suite lives beside the code it breaks, marked
`faults` too): a corrupt checkpoint, a wrong delimiter, random sweep specs, where Ray listens.

Elsewhere under the same marker: kill -9 of a training process (test_train.py), of a sweep worker
and of the sweep driver (test_sweep_ray.py, with the identifier scan of run folders, figures and
report), divergence (test_train.py), malformed MIMIC-IV files (test_prepare.py), and diverged runs
left out of the fits with a note (test_analysis.py).
"""

import gzip
import math
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from scaling.cli import app
from scaling.data.prepare import PrepareConfig, SourceError, prepare
from scaling.runspec import SpecError
from scaling.sweep.spec import parse_sweep
from scaling.training.loop import train
from tests.helpers import make_spec

pytestmark = pytest.mark.faults


@pytest.mark.slow  # 25 s: trains, corrupts and resumes a run
def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(prepared, tmp_path):
    spec = make_spec(prepared[0], train={"checkpoint_every": 10, "keep_checkpoints": 2})
    whole = train(spec, tmp_path / "whole", log=lambda _: None, peak_flops=1e11)
    run = tmp_path / "cut"
    train(spec, run, log=lambda _: None, peak_flops=1e11)
    # As if it had died while writing its last checkpoint: no result, the newest checkpoint's data garbled.
    (run / "result.json").unlink()
    newest = run / "checkpoints" / "60"
    damaged = [p for p in newest.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert damaged
    for path in damaged:
        path.write_bytes(b"\x00garbage" * 8)
    messages = []
    resumed = train(spec, run, log=messages.append, peak_flops=1e11)
    warning = next(m for m in messages if m.startswith("warning:"))
    assert "the checkpoint at step 60 cannot be read" in warning and "falling back to the one before" in warning
    assert any("resuming from step 50 of 60" in m for m in messages)
    assert resumed.status == "ok"
    assert resumed.train_loss == pytest.approx(whole.train_loss, rel=1e-5)
    assert resumed.loss == pytest.approx(whole.loss, rel=1e-5)


def test_a_wrong_delimiter_names_the_file_and_the_columns(synth, tmp_path):
    root = tmp_path / "tabs"
    shutil.copytree(synth, root)
    path = root / "hosp/patients.csv.gz"
    with gzip.open(path, "rt", newline="") as handle:
        text = handle.read()
    with gzip.open(path, "wt", newline="") as handle:
        handle.write(text.replace(",", "\t"))
    with pytest.raises(
        SourceError,
        match=r"patients.csv.gz: missing column 'subject_id', .* The header is split by tabs, not "
        r"commas: MIMIC-IV files are comma-separated",
    ):
        prepare(PrepareConfig(out=tmp_path / "out", mimic=root))
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tabs"]  # no half-written output


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**13),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-3, 100), st.floats(-1, 1e13), st.text(max_size=4)), max_size=4),
)
KEYS = st.sampled_from(
    [
        "name",
        "version",
        "family",
        "data",
        "budgets",
        "runs_root",
        "convention",
        "seeds",
        "tasks",
        "probe_train_rows",
        "dtype",
        "sizes",
        "recipe",
        "train",
        "resources",
        "retries",
        "extra",
    ]
)
TABLE_KEYS = st.sampled_from(
    [
        "count",
        "span",
        "widths",
        "cpus",
        "gpus",
        "tpus",
        "hosts",
        "accelerator_type",
        "context",
        "batch_rows",
        "lr_width_product",
        "eval_every",
        "preemptions",
        "failures",
        "nope",
    ]
)
VALID = {"name": "s", "version": 1, "family": "timeline", "data": "d", "budgets": [1e11, 1e12]}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.dictionaries(KEYS, st.one_of(SCALARS, st.dictionaries(TABLE_KEYS, SCALARS, max_size=3)), max_size=5),
    drop=st.lists(st.sampled_from(sorted(VALID)), max_size=2),
)
def test_random_sweep_specs_get_spec_errors_never_tracebacks(changes, drop):
    source = {k: v for k, v in {**VALID, **changes}.items() if k not in drop}
    try:
        sweep = parse_sweep(source, "random.toml")
    except SpecError as error:
        assert str(error).startswith("random.toml: ")
        return
    assert all(math.isfinite(b) and b > 0 for b in sweep.budgets)  # whatever passed is usable
    assert sweep.resources.cpus > 0 and sweep.sizes.count >= 1


def test_a_random_spec_file_through_the_command_line_is_an_error_line(tmp_path):
    for text in ('name = "x"\nbudgets = "many"\n', "name = [1, 2\n", 'name = "x"\n[sizes]\ncount = -1\n', "\x00\x01"):
        path = tmp_path / "bad.toml"
        path.write_text(text)
        result = CliRunner().invoke(app, ["sweep", "plan", str(path)])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and "Traceback" not in result.output and str(path) in result.output


def _listening(session: str) -> dict[str, set[str]]:
    """Addresses each process of one Ray session listens on (the session's processes and their children)."""
    import psutil

    roots = [p for p in psutil.process_iter(["cmdline"]) if session in " ".join(p.info["cmdline"] or [])]
    found: dict[str, set[str]] = {}
    for process in {q for p in roots for q in [p, *p.children(recursive=True)]}:
        try:
            listening = {c.laddr.ip for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
            found.setdefault(process.name(), set()).update(listening)
        except psutil.Error:
            continue
    return found


def test_the_embedded_ray_listens_on_localhost_only():
    from scaling.sweep.driver import connect

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray = connect(None, num_cpus=1)
    try:
        assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1"]
        assert ray.get(ray.remote(lambda: ray.util.get_node_ip_address()).remote()) == "127.0.0.1"
        session = Path(ray._private.worker._global_node.get_session_dir_path()).name
        listening = _listening(session)
        addresses = set().union(*listening.values())
        assert {"gcs_server", "raylet"} <= set(listening) and addresses, listening
        assert addresses <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening
    finally:
        ray.shutdown()
