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

import batchscale
from batchscale.config import config_hash

SCHEMA_VERSION = 1
INT_FIELDS = ("step", "examples_seen")
OPTIONAL_METRICS = {
    "test_perplexity": "exp(test_loss), language modelling only",
    "test_miou": "mean intersection over union on the test split, segmentation only",
}


class TraceError(RuntimeError):
    """A trace file that is missing, truncated or not a batchscale trace."""


def software_versions() -> dict:
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__, "h5py": h5py.__version__, "batchscale": batchscale.__version__,
                "engine_source": source_fingerprint()}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent)
        if commit.returncode == 0:
            versions["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return versions


def source_fingerprint(parts=("engine", "models", "data", "traces.py")) -> str:
    """sha256 (16 hex digits) of the package sources that determine a trace: engine, models, data, format.

    Any edit there, a comment included, changes it; analysis and figure code are left out, since they
    never change a trace.
    """
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for part in parts:
        path = root / part
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def write_trace(result, path: str | Path) -> None:
    """Write a RunResult atomically: readers never see a half-written trace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    run = result.run
    with h5py.File(temporary, "w") as handle:
        attrs = {
            "schema_version": SCHEMA_VERSION, "study": run["study"], "dataset": run["dataset"]["name"],
            "model": run["model"]["name"], "task": result.info.get("task", ""), "strategy": run["strategy"],
            "batch_size": run["batch_size"], "seed": run["seed"], "lr": float(run["lr_peak"]),
            "epochs": run["epochs"], "steps_total": result.steps_total, "status": result.status,
            "config_json": json.dumps(run, sort_keys=True), "config_hash": config_hash(run),
            "versions_json": json.dumps(software_versions(), sort_keys=True), "device": result.device,
            "threads": result.threads, "micro_batch": int(run.get("micro_batch") or 0),
            "ghost_batch_size": int(result.info.get("ghost_batch_size", run["batch_size"])),
            "wall_seconds": float(result.wall_seconds), "eval_seconds": float(result.eval_seconds),
            "info_json": json.dumps(result.info, sort_keys=True, default=str),
        }
        for key, value in attrs.items():
            handle.attrs[key] = value
        for name, values in result.points.items():
            dtype = np.int64 if name in INT_FIELDS else np.float64
            dataset = handle.create_dataset(name, data=np.asarray(values, dtype=dtype))
            if name in OPTIONAL_METRICS:
                dataset.attrs["description"] = OPTIONAL_METRICS[name]
        for name, value in result.scalars.items():
            handle.create_dataset(name, data=np.float64(value))
    os.replace(temporary, path)


def read_trace(path: str | Path) -> dict:
    """Read a trace into {'attrs': {...}, 'points': {name: array}, 'scalars': {name: float}}."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            attrs = {key: (value.item() if hasattr(value, "item") else value) for key, value in handle.attrs.items()}
            points, scalars = {}, {}
            for name, dataset in handle.items():
                if dataset.shape == ():
                    scalars[name] = float(dataset[()])
                else:
                    points[name] = dataset[()]
    except (OSError, KeyError, ValueError) as err:
        raise TraceError(f"cannot read trace {path}: {err}; delete it and rerun to retrain that run") from None
    missing = [key for key in ("schema_version", "status", "strategy", "batch_size", "seed") if key not in attrs]
    if missing or "step" not in points:
        raise TraceError(f"trace {path} is incomplete (missing {', '.join(missing) or 'step'}); "
                         f"delete it and rerun to retrain that run")
    return {"attrs": attrs, "points": points, "scalars": scalars}
