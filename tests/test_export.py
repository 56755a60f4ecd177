"""Export: safetensors, config, tokenizer files and model card for each family, and the rebuilt model's outputs
equal to the orbax checkpoint's."""

import dataclasses
import json
import subprocess

import jax.numpy as jnp
import numpy as np
import pytest

from scaling.data.dataset import PreparedDataset
from scaling.export import CARD, CONFIG, WEIGHTS, export_run, load_exported
from scaling.families import FAMILIES
from scaling.record import RunError
from scaling.training.checkpoints import restore_model
from scaling.training.loop import train
from scaling.training.tasks import make_task
from tests.helpers import EHRSCALE, make_spec

SHAPES = {
    "timeline": {"tokens": 20 * 16 * 32},
    "labrador": {"tokens": 20 * 4 * 128, "recipe": {"batch_rows": 4, "context": 128}},
    "bert": {"tokens": 20 * 4 * 128, "recipe": {"batch_rows": 4, "context": 128}},
}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def exported(request, prepared, tmp_path_factory):
    """A short run of a family, trained and exported: (spec, run folder, export folder)."""
    family = request.param
    # trained with the reference attention: an export (and a restored model) runs wherever it is loaded ("auto")
    spec = make_spec(prepared[0], family=family, name=f"tiny-{family}", **SHAPES[family])
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, attention="reference"))
    root = tmp_path_factory.mktemp(family)
    train(spec, root / "run", log=lambda _: None, peak_flops=1e11)
    export_run(root / "run", root / "export")
    return spec, root / "run", root / "export"


def test_the_rebuilt_model_computes_what_the_checkpoint_does(exported):
    spec, run_dir, folder = exported
    dataset = PreparedDataset.open(spec.data)
    original = restore_model(run_dir, spec, dataset)
    rebuilt = load_exported(folder)  # from the folder alone
    assert type(rebuilt) is type(original) and rebuilt.config == original.config
    batch = make_task(spec, dataset).eval_batches[0]
    loss = FAMILIES[spec.family].loss()
    for got, want in zip(loss(rebuilt, batch, jnp.float32), loss(original, batch, jnp.float32)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)
    assert float(jnp.sum(loss(rebuilt, batch, jnp.float32)[1])) > 0  # the rows held terms to compare


def test_the_folder_says_what_the_model_is_and_names_no_one(exported):
    spec, run_dir, folder = exported
    result = json.loads((run_dir / "result.json").read_text())
    config = json.loads((folder / CONFIG).read_text())
    assert config["format"] == "ehrscale-export/1" and config["family"] == spec.family
    assert config["params"] == result["params"] and config["model_config"]["attention"] == "auto"
    from safetensors.numpy import load_file

    weights = load_file(folder / WEIGHTS)
    assert sum(w.size for w in weights.values()) == result["params"]
    assert all(w.dtype == np.float32 for w in weights.values())
    expected = {"timeline": {"vocab.parquet", "quantiles.parquet", "tokenizer.json"}}.get(
        spec.family, {"lab_vocab.parquet", "ecdf_values.npy", "ecdf_cdf.npy", "ecdf_offsets.npy", "bags.json"}
    )
    assert {p.name for p in (folder / "tokenizer").iterdir()} == expected
    card = (folder / CARD).read_text()
    for heading in ("## Data it saw", "## Input it expects", "## Training", "## Results", "## Data-use terms"):
        assert heading in card
    assert f"{result['params']:,} parameters" in card and f"{result['loss']:.4f}" in card
    assert "Synthetic data from ehrscale's built-in MIMIC-IV generator" in card
    dataset = PreparedDataset.open(spec.data)
    subjects = {str(s) for split in ("train", "tuning", "held_out") for s in dataset.timelines(split).subject_ids}
    text = card + (folder / CONFIG).read_text()
    assert not [s for s in subjects if s in text]


def test_export_refuses_what_it_cannot_export(prepared, tmp_path, exported):
    spec, run_dir, folder = exported
    with pytest.raises(RunError, match="no result.json, so the run has not finished; train it before you export it"):
        export_run(tmp_path, tmp_path / "out")
    config = json.loads((folder / CONFIG).read_text())
    config["model_config"]["d_model"] *= 2
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / CONFIG).write_text(json.dumps(config))
    (broken / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes())
    with pytest.raises(RunError, match="has shape"):
        load_exported(broken)
    with pytest.raises(RunError, match="not an export folder"):
        load_exported(tmp_path / "out")


def test_the_command_exports_and_loads(exported, tmp_path):
    spec, run_dir, _ = exported
    if spec.family != "timeline":
        pytest.skip("one family is enough for the command line")
    done = subprocess.run([EHRSCALE, "export", str(run_dir), "--out", str(tmp_path / "x")], capture_output=True)
    assert done.returncode == 0, done.stderr
    loaded = subprocess.run([EHRSCALE, "export", "--load", str(tmp_path / "x")], capture_output=True, text=True)
    params = json.loads((run_dir / "result.json").read_text())["params"]
    assert loaded.returncode == 0 and f"Decoder with {params:,} parameters" in loaded.stdout
    missing = subprocess.run([EHRSCALE, "export", str(run_dir)], capture_output=True, text=True)
    assert missing.returncode != 0 and "give a finished run folder and --out" in missing.stderr
