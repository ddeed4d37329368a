"""HDF5 traces: one file per run, written to a temporary name and renamed when complete."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

import h5py
import numpy as np

from batchscale.errors import OutputNotWritable, TraceError
from batchscale.spec.runs import RunKey, config_hash
from batchscale.version import __version__

SCHEMA_VERSION = 1
INT_FIELDS = ("step", "examples_seen")
OPTIONAL_METRICS = {
    "test_perplexity": "exp(test_loss), language modelling only",
    "test_miou": "mean intersection over union on the test split, segmentation only",
    # the gradient noise scale (study key noise_scale; batchscale.engine.noise)
    "noise_g2": "two-batch estimate of |G|^2 on the training evaluation subset, (loss/parameter)^2",
    "noise_trace_sigma": "two-batch estimate of tr Sigma (n convention), (loss/parameter)^2 x examples",
    "noise_g2_exact": "|G|^2 from every per-example gradient of the subset; NaN where not computed",
    "noise_trace_sigma_exact": "tr Sigma from every per-example gradient of the subset; NaN where not computed",
    "noise_batch_big": "examples in the big batch of that point's two-batch estimate (noise_scale.batch_big)",
    "noise_draws": "two-batch draws averaged at that point (noise_scale.draws)",
}


# The trace contract (DESIGN.md): attributes and 1-D datasets every trace must carry, one list each, read by
# write_trace's tests and by read_trace's check. A dataset added to traces is added here once.
REQUIRED_ATTRS = ("schema_version", "study", "dataset", "model", "strategy", "batch_size", "seed", "lr", "epochs",
                  "steps_total", "status", "config_json", "config_hash", "versions_json", "device", "wall_seconds",
                  "content_sha256")
REQUIRED_POINTS = ("step", "epoch", "examples_seen", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
                   "wall_time")
# A run marked completed has a finite value of each of these at every evaluation point.
FINITE_WHEN_COMPLETED = ("train_loss", "test_loss")
STATUSES = ("completed", "diverged")
RETRAIN = "delete it and rerun snakemake to retrain that run"
# Left out of the content hash: it differs between two runs of the same config (the rest does not).
CLOCK_POINTS = ("wall_time",)


def content_hash(points: dict, scalars: dict) -> str:
    """sha256 of a trace's datasets (names, dtypes, bytes) but the wall clock: what the engine computed.
    Recorded as `content_sha256` and checked on every read, so a value edited in place is refused."""
    digest = hashlib.sha256()
    for name in sorted(set(points) | set(scalars)):
        if name in CLOCK_POINTS:
            continue
        values = np.ascontiguousarray(points[name] if name in points else scalars[name])
        digest.update(f"{name}\0{values.dtype.str}\0{values.shape}\0".encode() + values.tobytes())
    return digest.hexdigest()


def software_versions(code: str | None = None) -> dict:
    """Versions of what wrote a trace; `code` is the train stage's fingerprint (the pack rule's code param)."""
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__, "h5py": h5py.__version__, "batchscale": __version__}
    if code:
        versions["code"] = code
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent)
        if commit.returncode == 0:
            versions["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return versions


def write_trace(result, path: str | Path, code: str | None = None) -> None:
    """Write a RunResult atomically: readers never see a half-written trace. `code`: the fingerprint of the
    code that trained it, recorded in versions_json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        _write_file(temporary, result, code)
        os.replace(temporary, path)
    except OSError as err:  # a full disk or a vanished folder: no temporary file left behind, one line
        temporary.unlink(missing_ok=True)
        raise OutputNotWritable(f"cannot write trace {path} ({err.strerror or err}); free disk space there and "
                                f"rerun snakemake") from None


def _write_file(temporary: Path, result, code: str | None) -> None:
    run = result.run
    with h5py.File(temporary, "w") as handle:
        attrs = {
            "schema_version": SCHEMA_VERSION, "study": run["study"], "dataset": run["dataset"]["name"],
            "model": run["model"]["name"], "task": result.info.get("task", ""), "strategy": run["strategy"],
            "batch_size": run["batch_size"], "seed": run["seed"], "lr": float(run["lr_peak"]),
            "epochs": run["epochs"], "steps_total": result.steps_total, "status": result.status,
            "config_json": json.dumps(run, sort_keys=True), "config_hash": config_hash(run),
            "versions_json": json.dumps(software_versions(code), sort_keys=True), "device": result.device,
            "threads": result.threads, "micro_batch": int(run.get("micro_batch") or 0),
            "ghost_batch_size": int(result.info.get("ghost_batch_size", run["batch_size"])),
            "wall_seconds": float(result.wall_seconds), "eval_seconds": float(result.eval_seconds),
            "info_json": json.dumps(result.info, sort_keys=True, default=str),
        }
        points = {name: np.asarray(values, dtype=np.int64 if name in INT_FIELDS else np.float64)
                  for name, values in result.points.items()}
        scalars = {name: np.float64(value) for name, value in result.scalars.items()}
        attrs["content_sha256"] = content_hash(points, scalars)
        for key, value in attrs.items():
            handle.attrs[key] = value
        for name, values in points.items():
            dataset = handle.create_dataset(name, data=values)
            if name in OPTIONAL_METRICS:
                dataset.attrs["description"] = OPTIONAL_METRICS[name]
        for name, value in scalars.items():
            handle.create_dataset(name, data=value)


def read_trace(path: str | Path) -> dict:
    """Read a trace into {'attrs': {...}, 'points': {name: array}, 'scalars': {name: float}}."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            attrs = {key: (value.item() if hasattr(value, "item") else value) for key, value in handle.attrs.items()}
            points, scalars = {}, {}
            for name, dataset in handle.items():
                if dataset.shape == ():
                    scalars[name] = dataset[()]
                else:
                    points[name] = dataset[()]
    except (OSError, KeyError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TraceError(f"trace {path}: cannot be read ({reason}); {RETRAIN}") from None
    _check_contract(path, attrs, points, scalars)
    return {"attrs": attrs, "points": points, "scalars": {name: float(value) for name, value in scalars.items()}}


def _check_contract(path: Path, attrs: dict, points: dict, scalars: dict) -> None:
    """One TraceError naming the file, what is wrong and how to retrain, for the first broken promise."""
    def fail(problem: str):
        raise TraceError(f"trace {path}: {problem}; {RETRAIN}")

    missing_attrs = [name for name in REQUIRED_ATTRS if name not in attrs]
    if missing_attrs:
        fail(f"missing attribute {', '.join(missing_attrs)}")
    missing_points = [name for name in REQUIRED_POINTS if name not in points]
    if missing_points:
        fail(f"missing dataset {', '.join(missing_points)}")
    length = len(points["step"])
    if length == 0:
        fail("has no evaluation points")
    for name, values in points.items():
        if np.ndim(values) != 1 or len(values) != length:
            fail(f"dataset {name} has shape {np.shape(values)}, expected ({length},) like step")
    for name, values in {**points, **scalars}.items():
        wanted = np.int64 if name in INT_FIELDS else np.float64
        if np.asarray(values).dtype != wanted:
            fail(f"dataset {name} is {np.asarray(values).dtype}, not {np.dtype(wanted)}")
    if attrs["status"] not in STATUSES:
        fail(f"status {attrs['status']!r} is not one of {', '.join(STATUSES)}")
    if attrs["status"] == "completed":
        for name in FINITE_WHEN_COMPLETED:
            bad = ~np.isfinite(np.asarray(points[name], dtype=np.float64))
            if bad.any():
                fail(f"status completed but {name} is not finite at {int(bad.sum())} of {length} points")
    expected = RunKey.from_trace_path(path)
    if expected is not None:
        for field in ("study", "strategy", "batch_size", "seed"):
            recorded = attrs[field]
            wanted = getattr(expected, field)
            if (int(recorded) if isinstance(wanted, int) else str(recorded)) != wanted:
                fail(f"attribute {field} is {recorded!r} but the path is for {field} {wanted!r} "
                     f"(a trace copied from another run?)")
        recorded_trial = json.loads(attrs["config_json"]).get("trial")
        if recorded_trial != expected.trial:
            fail(f"its run config records trial {recorded_trial!r} but the path is for trial {expected.trial!r} "
                 f"(a trace copied from another run?)")
    if content_hash(points, scalars) != attrs["content_sha256"]:
        fail("its datasets differ from what was written (content_sha256 does not match: edited in place?)")
