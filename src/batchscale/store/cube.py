"""Aggregate a study's traces into one xarray cube (strategy x batch_size x seed x step).

The trials of the `tuned` search are not a strategy of the `strategy` coordinate (the fixed rules have
no trials): they are stacked beside it as the variables prefixed TUNED_PREFIX, with a `trial` dimension
(batch_size x trial x seed [x step]), plus the trials' hyperparameters (tuned_lr, and tuned_momentum /
tuned_schedule where searched) over (batch_size, trial). So every fixed-rule analysis reads the cube as
before, and the tuned analysis (batchscale.analysis.tuned_tables) reads the tuned_ variables.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import xarray as xr

from batchscale.errors import StageInputError, TraceError
from batchscale.spec.strategies import TUNED
from batchscale.store.traces import RETRAIN, read_trace

TUNED_PREFIX = "tuned_"

# per-run scalars of the traces (the linear approximation error at the end and at the end of warm-up; its
# value at every evaluation point is a point variable, linear_approx_error)
TRACE_SCALARS = ("final_linear_approx_error", "final_linear_approx_error_rel", "linear_approx_error_warmup_end",
                 "linear_approx_error_warmup_end_rel")
PER_RUN = ("steps_total", "lr_peak", "epochs", "wall_seconds", *TRACE_SCALARS,
           "final_train_loss", "final_test_loss", "final_test_acc")


REBUILD = "delete it and rerun snakemake to rebuild it"


def study_config_hash(study_config: dict) -> str:
    """sha256 of a study's resolved config (sorted-key JSON): which study a cube or table was made for."""
    return hashlib.sha256(json.dumps(study_config, sort_keys=True).encode()).hexdigest()


def _array_bytes(values) -> bytes:
    values = np.asarray(values)
    if values.dtype.kind in "OUS":  # strings survive netCDF as object arrays: hash their text
        return "\0".join(str(v) for v in values.ravel()).encode()
    return np.ascontiguousarray(values).tobytes()


def cube_content_hash(cube: xr.Dataset) -> str:
    """sha256 of every variable and coordinate (names, shapes, values) of a cube, as written and as read."""
    digest = hashlib.sha256()
    for name in sorted(map(str, cube.variables)):
        values = cube[name].values
        digest.update(f"{name}\0{values.shape}\0".encode() + _array_bytes(values))
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _refuse_two_traces_of_one_run(traces) -> None:
    """Two files claiming one (strategy, batch size, seed) would overwrite each other in the cube."""
    seen = {}
    for path, trace in traces:
        attrs = trace["attrs"]
        run = (attrs["strategy"], int(attrs["batch_size"]), int(attrs["seed"]), _trial(trace))
        if run in seen:
            trial = "" if run[3] is None else f", trial {run[3]}"
            raise TraceError(f"trace {path}: records strategy {run[0]}, batch size {run[1]}, seed {run[2]}{trial}, "
                             f"like {seen[run]} (a copied trace?); {RETRAIN}")
        seen[run] = path


def _trial(trace) -> int | None:
    return json.loads(trace["attrs"]["config_json"]).get("trial")


def _run_values(trace) -> dict:
    attrs = trace["attrs"]
    last = {name: trace["points"][name][-1] for name in ("train_loss", "test_loss", "test_acc")}
    return {"steps_total": attrs["steps_total"], "lr_peak": attrs["lr"], "epochs": attrs["epochs"],
            "wall_seconds": attrs["wall_seconds"],
            **{name: trace["scalars"].get(name, np.nan) for name in TRACE_SCALARS},
            "final_train_loss": last["train_loss"], "final_test_loss": last["test_loss"],
            "final_test_acc": last["test_acc"]}


def tuned_variables(traces, batch_sizes, seeds, steps, point_names) -> tuple[dict, dict]:
    """The tuned_ variables of the trials' traces (dims batch_size, trial, seed [, step]) and the trial
    coordinate; ({}, {}) without trials."""
    trials = sorted({_trial(t) for _, t in traces})
    if not trials:
        return {}, {}
    shape = (len(batch_sizes), len(trials), len(seeds), len(steps))
    step_index = {s: i for i, s in enumerate(steps)}
    points = {name: np.full(shape, np.nan) for name in point_names}
    per_run = {name: np.full(shape[:3], np.nan) for name in PER_RUN}
    status = np.full(shape[:3], "missing", dtype=object)
    hyper: dict[str, np.ndarray] = {}
    for _, trace in traces:
        attrs = trace["attrs"]
        where = (batch_sizes.index(int(attrs["batch_size"])), trials.index(_trial(trace)), seeds.index(int(attrs["seed"])))
        columns = [step_index[int(s)] for s in trace["points"]["step"]]
        for name, values in trace["points"].items():
            if name != "step":
                points[name][where + (columns,)] = values
        for name, value in _run_values(trace).items():
            per_run[name][where] = value
        status[where] = attrs["status"]
        for name, value in json.loads(attrs["config_json"]).get("trial_hyper", {}).items():
            if name not in hyper:
                hyper[name] = np.full(shape[:2], np.nan) if not isinstance(value, str) else np.full(shape[:2], "", dtype=object)
            hyper[name][where[:2]] = value
    dims = ("batch_size", "trial", "seed", "step")
    out = {TUNED_PREFIX + name: (dims, array) for name, array in points.items()}
    out.update({TUNED_PREFIX + name: (dims[:3], array) for name, array in per_run.items()})
    out[TUNED_PREFIX + "status"] = (dims[:3], status.astype(str))
    out.update({TUNED_PREFIX + name: (dims[:2], array.astype(str) if array.dtype == object else array)
                for name, array in hyper.items()})
    return out, {"trial": np.asarray(trials, dtype=np.int64)}


def build_cube(trace_paths: list[str | Path], study: str, study_config: dict) -> xr.Dataset:
    """Stack traces onto the union of their evaluation steps; NaN where a run has no point. Trials of
    `tuned` go to the tuned_ variables (module docstring)."""
    every = [(Path(p), read_trace(p)) for p in trace_paths]
    _refuse_two_traces_of_one_run(every)
    traces = [(p, t) for p, t in every if t["attrs"]["strategy"] != TUNED]
    trial_traces = [(p, t) for p, t in every if t["attrs"]["strategy"] == TUNED]
    strategies = [s for s in study_config.get("strategies", []) if any(t["attrs"]["strategy"] == s for _, t in traces)]
    strategies += sorted({t["attrs"]["strategy"] for _, t in traces} - set(strategies))
    batch_sizes = sorted({int(t["attrs"]["batch_size"]) for _, t in every})
    seeds = sorted({int(t["attrs"]["seed"]) for _, t in every})
    steps = sorted({int(s) for _, t in every for s in t["points"]["step"]})
    point_names = sorted({name for _, t in every for name in t["points"]} - {"step"})
    shape = (len(strategies), len(batch_sizes), len(seeds), len(steps))
    step_index = {s: i for i, s in enumerate(steps)}
    point_arrays = {name: np.full(shape, np.nan) for name in point_names}
    run_arrays = {name: np.full(shape[:3], np.nan) for name in PER_RUN}
    status = np.full(shape[:3], "missing", dtype=object)
    provenance = []
    for path, trace in traces:
        attrs = trace["attrs"]
        where = (strategies.index(attrs["strategy"]), batch_sizes.index(int(attrs["batch_size"])),
                 seeds.index(int(attrs["seed"])))
        columns = [step_index[int(s)] for s in trace["points"]["step"]]
        for name, values in trace["points"].items():
            if name != "step":
                point_arrays[name][where + (columns,)] = values
        status[where] = attrs["status"]
        for name, value in _run_values(trace).items():
            run_arrays[name][where] = value
    for path, trace in every:
        attrs = trace["attrs"]
        provenance.append({"path": str(path), "config_hash": attrs["config_hash"], "sha256": _sha256(path),
                           "status": attrs["status"], "device": attrs["device"]})
    dims = ("strategy", "batch_size", "seed", "step")
    data_vars = {name: (dims, array) for name, array in point_arrays.items()}
    data_vars.update({name: (dims[:3], array) for name, array in run_arrays.items()})
    data_vars["status"] = (dims[:3], status.astype(str))
    tuned_vars, trial_coord = tuned_variables(trial_traces, batch_sizes, seeds, steps, point_names)
    data_vars.update(tuned_vars)
    first = every[0][1]["attrs"] if every else {}
    info = json.loads(first.get("info_json", "{}")) if every else {}
    cube = xr.Dataset(
        data_vars,
        coords={"strategy": strategies, "batch_size": np.asarray(batch_sizes, dtype=np.int64),
                "seed": np.asarray(seeds, dtype=np.int64), "step": np.asarray(steps, dtype=np.int64),
                **trial_coord},
        attrs={"study": study, "study_config_json": json.dumps(study_config, sort_keys=True),
               "study_config_sha256": study_config_hash(study_config),
               "base_batch": int(study_config.get("base_batch", batch_sizes[0] if batch_sizes else 1)),
               "eta0": float(study_config.get("eta0", np.nan)), "task": first.get("task", ""),
               "dataset": first.get("dataset", ""), "model": first.get("model", ""),
               # what an accuracy figure needs to say how much one example is worth
               "num_test": int(info.get("num_test", -1)), "num_classes": int(info.get("num_classes", -1)),
               "provenance_json": json.dumps(provenance, sort_keys=True)},
    )
    cube["steps_total"].attrs["units"] = "steps"
    cube["wall_seconds"].attrs["units"] = "s"
    cube["step"].attrs["long_name"] = "weight updates"
    cube.attrs["content_sha256"] = cube_content_hash(cube)
    return cube


def write_cube(cube: xr.Dataset, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    cube.to_netcdf(temporary, engine="h5netcdf")
    temporary.replace(path)


def open_cube(path: str | Path, study: str | None = None, study_config: dict | None = None) -> xr.Dataset:
    """A cube as written by build_cube, loaded; with `study` (and `study_config`), only the cube of that study
    (and config). Anything else (unreadable, edited, another study's) is a StageInputError naming the file."""
    try:
        with xr.open_dataset(path, engine="h5netcdf") as opened:
            cube = opened.load()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StageInputError(f"cube {path}: cannot be read ({reason}); {REBUILD}") from None
    recorded = cube.attrs.get("content_sha256")
    if recorded != cube_content_hash(cube):
        raise StageInputError(f"cube {path}: its contents differ from what was written (content_sha256 does not "
                              f"match: edited, or not a batchscale cube); {REBUILD}")
    if study is not None and cube.attrs.get("study") != study:
        raise StageInputError(f"cube {path}: records study {cube.attrs.get('study')!r}, not {study!r} (a cube copied "
                              f"from another study?); {REBUILD}")
    if study_config is not None and cube.attrs.get("study_config_sha256") != study_config_hash(study_config):
        raise StageInputError(f"cube {path}: was built for another config of study {study!r} than the one given; "
                              f"{REBUILD}")
    return cube
