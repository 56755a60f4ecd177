"""Shared fixtures: one small synthetic MIMIC-IV and its prepared dataset per test session."""

from pathlib import Path

import pytest

from scaling.data.prepare import PrepareConfig, prepare
from scaling.data.synthetic import write_synthetic_mimic

SMALL_PATIENTS = 300


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    """A 300-patient synthetic MIMIC-IV (seed 7)."""
    out = tmp_path_factory.mktemp("synth") / "mimic"
    write_synthetic_mimic(out, SMALL_PATIENTS, seed=7, workers=1)
    return out


@pytest.fixture(scope="session")
def prepared(synth, tmp_path_factory) -> tuple[Path, dict]:
    """The synthetic MIMIC-IV prepared into MEDS events (2 shards), and its manifest."""
    out = tmp_path_factory.mktemp("prep") / "prep"
    manifest = prepare(PrepareConfig(out=out, mimic=synth, shards=2))
    return out, manifest
