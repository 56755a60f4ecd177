"""One fit, read by everyone: `fits.json`, keyed by the table it came from and the options it used.

`ehrscale fit` writes it (atomically); `plot`, `report`, `optimal` and `next-grid` read it when its
key matches the table and options they are given, and otherwise fit again and write it, so every
figure band and every interval the report quotes come from the same bootstrap replicates.

The key is a SHA-256 of the table file's bytes and the options that change a fit (column mapping,
budget tolerance, method, fixed E, points excluded); the number of bootstrap replicates is kept in
the file and a command asks for another number only when told to (`--resamples`).
"""

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from analysis.cost import CostModel
from analysis.downstream import AurocLaw, auroc_tasks, fit_auroc, loss_vs_auroc, zero_shot_tasks
from analysis.isoflop import WINDOW, IsoflopFit, PowerLaw, Vertex, fit_isoflop
from analysis.parametric import ParametricFit, fit_parametric
from analysis.table import BUDGET_GROUPING, Table, TableError

FITS_FORMAT = 3  # 3: vertex replicates from the pooled loss noise (isoflop.vertex_noise)
FITS = "fits.json"
RESAMPLES = 400
METHODS = ("isoflop", "parametric", "all")


@dataclass(frozen=True)
class FitOptions:
    """What decides a fit (all but `resamples` are in the key)."""

    method: str = "all"
    budget_tolerance: float = BUDGET_GROUPING
    fixed_E: float | None = None
    exclude_worst: int = 0
    window: float | None = WINDOW  # Approach 2's parabola: runs within this factor of a budget's best (None: all)
    columns: tuple[tuple[str, str], ...] = ()  # (target, source) column mapping, sorted
    resamples: int | None = None  # None: whatever a current fits.json used, else RESAMPLES

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise TableError(f"--method must be isoflop, parametric or all, got {self.method!r}")
        if self.window is not None and not self.window > 1:
            raise TableError(
                f"--window must be above 1 (a factor in parameters), or 0 for every point, got {self.window}"
            )

    def key_fields(self) -> dict:
        fields = asdict(self)
        fields.pop("resamples")
        fields["columns"] = [list(pair) for pair in self.columns]
        return fields


@dataclass(frozen=True)
class Fits:
    key: str
    resamples: int
    options: FitOptions
    isoflop: IsoflopFit | None
    isoflop_error: str | None
    parametric: ParametricFit | None
    auroc_laws: tuple[AurocLaw, ...]
    loss_lines: tuple[dict, ...]


def table_key(path: Path, options: FitOptions) -> str:
    digest = hashlib.sha256(Path(path).read_bytes())
    digest.update(json.dumps(options.key_fields(), sort_keys=True).encode())
    return digest.hexdigest()


def fit_table(data: Table, options: FitOptions, key: str) -> Fits:
    """Every fit the options ask for; Approach 2 that cannot be fitted is an error only when it alone was asked for."""
    resamples = options.resamples or RESAMPLES
    iso, iso_error, parametric = None, None, None
    if options.method in ("isoflop", "all"):
        try:
            iso = fit_isoflop(data, resamples=resamples, window=options.window)
        except TableError as error:
            if options.method == "isoflop":
                raise
            iso_error = str(error)
    if options.method in ("parametric", "all"):
        parametric = fit_parametric(
            data, resamples=resamples, fixed_E=options.fixed_E, exclude_worst=options.exclude_worst
        )
    tasks = auroc_tasks(data)
    laws = (
        *(fit_auroc(data, task) for task in tasks),
        *(fit_auroc(data, t, zero_shot=True) for t in zero_shot_tasks(data)),
    )
    laws = tuple(law for law in laws if law is not None)
    lines = tuple(line for line in (loss_vs_auroc(data, task) for task in tasks) if line is not None)
    return Fits(
        key=key,
        resamples=resamples,
        options=options,
        isoflop=iso,
        isoflop_error=iso_error,
        parametric=parametric,
        auroc_laws=laws,
        loss_lines=lines,
    )


def document(fits: Fits, data: Table, source: str) -> dict:
    """fits.json: the key, where compute came from, every law with its intervals, and the bootstrap replicates."""
    frame = data.frame
    conventions = sorted(frame["convention"].drop_nulls().unique().to_list()) if "convention" in frame.columns else []
    doc: dict = {
        "format": FITS_FORMAT,
        "key": fits.key,
        "table": source,
        "rows": frame.height,
        "options": asdict(fits.options) | {"resamples": fits.resamples},
        "params_from": data.params_from,
        "loss": data.loss_label,
        "flops_from": data.flops_from,
        "flop_convention": conventions or "not recorded in the table",
        "compute": data.cost.as_dict(),
        "notes": list(data.notes),
        "warnings": list(data.warnings),
    }
    if fits.isoflop is not None:
        iso = fits.isoflop
        doc["isoflop"] = {
            "n_opt": iso.n_opt.as_dict(),
            "d_opt": iso.d_opt.as_dict(),
            "loss_opt": iso.loss_opt.as_dict(),
            "budgets": [v.as_dict() for v in iso.vertices],
            "excluded": iso.excluded,
            "vertex_noise": {"sd": iso.noise, "dof": iso.noise_dof},
            "bootstrap": {
                "n_opt": iso.bootstrap_n.tolist(),
                "d_opt": iso.bootstrap_d.tolist(),
                "loss_opt": iso.bootstrap_loss.tolist(),
            },
        }
    elif fits.isoflop_error:
        doc["isoflop"] = {"error": fits.isoflop_error}
    if fits.parametric is not None:
        doc["parametric"] = fits.parametric.as_dict() | {"bootstrap": fits.parametric.bootstrap.tolist()}
    if fits.auroc_laws or fits.loss_lines:
        doc["downstream"] = {
            "auroc_vs_compute": [law.as_dict() for law in fits.auroc_laws],
            "loss_vs_auroc": list(fits.loss_lines),
        }
    return doc


def from_document(doc: dict) -> Fits:
    """The fits back from fits.json (what the figures, the report and the answers need)."""
    cost = CostModel.from_dict(doc["compute"])
    options = doc["options"]
    resamples = options.pop("resamples")
    options = FitOptions(**options | {"columns": tuple(tuple(pair) for pair in options["columns"])})
    iso, iso_error = None, None
    if "isoflop" in doc and "error" in doc["isoflop"]:
        iso_error = doc["isoflop"]["error"]
    elif "isoflop" in doc:
        d = doc["isoflop"]
        boot = {k: np.asarray(v, dtype=float).reshape(-1, 2) for k, v in d["bootstrap"].items()}
        vertices = [
            Vertex(**(v | {k: tuple(v[k]) for k in ("n_interval", "parabola", "fitted_range") if k in v}))
            for v in d["budgets"]
        ]
        iso = IsoflopFit(
            vertices=vertices,
            excluded=d["excluded"],
            n_opt=PowerLaw.from_dict(d["n_opt"]),
            d_opt=PowerLaw.from_dict(d["d_opt"]),
            bootstrap_n=boot["n_opt"],
            bootstrap_d=boot["d_opt"],
            loss_opt=PowerLaw.from_dict(d["loss_opt"]),
            bootstrap_loss=boot["loss_opt"],
            cost=cost,
            noise=d["vertex_noise"]["sd"],
            noise_dof=d["vertex_noise"]["dof"],
        )
    parametric = None
    if "parametric" in doc:
        p = doc["parametric"]
        parametric = ParametricFit(
            E=p["E"],
            A=p["A"],
            B=p["B"],
            alpha=p["alpha"],
            beta=p["beta"],
            objective=p["objective"],
            intervals={k: tuple(v) for k, v in p["intervals"].items()},
            bootstrap=np.asarray(p["bootstrap"], dtype=float).reshape(-1, 5),
            cost=cost,
            fixed_E=p["fixed_E"],
            points=p["points"],
            excluded=tuple(p["excluded"]),
            shift=p["shift"],
        )
    downstream = doc.get("downstream", {})
    return Fits(
        key=doc["key"],
        resamples=resamples,
        options=options,
        isoflop=iso,
        isoflop_error=iso_error,
        parametric=parametric,
        auroc_laws=tuple(AurocLaw.from_dict(a) for a in downstream.get("auroc_vs_compute", [])),
        loss_lines=tuple(downstream.get("loss_vs_auroc", [])),
    )


def default_path(table: Path) -> tuple[Path, str]:
    """fits.json beside the table when that folder is writable, else in the current folder; and why there."""
    beside = Path(table).resolve().parent
    if os.access(beside, os.W_OK):
        return beside / FITS, "beside the table"
    return Path.cwd() / FITS, f"in the current folder ({beside} is not writable)"


def write(path: Path, doc: dict) -> None:
    """Atomically: a temporary file beside it, renamed over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    os.replace(tmp, path)


def load_or_fit(
    table_path: Path, data: Table, options: FitOptions, fits_path: Path | None = None, refit: bool = False
) -> tuple[Fits, Path, str]:
    """The current fits of this table and options: read from fits.json when its key matches (and the replicates
    are the ones asked for), else fitted and written there. Returns (fits, path, what happened)."""
    path, where = (Path(fits_path), "where asked") if fits_path else default_path(table_path)
    key = table_key(table_path, options)
    if path.exists() and not refit:
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            doc = {}
        if (
            doc.get("format") == FITS_FORMAT
            and doc.get("key") == key
            and options.resamples in (None, doc["options"]["resamples"])
        ):
            return from_document(doc), path, f"read the current fits from {path}"
    fits = fit_table(data, options, key)
    write(path, document(fits, data, str(table_path)))
    return fits, path, f"wrote {path} ({where})"
