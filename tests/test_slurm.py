"""The workflow on a real (single-node) SLURM cluster gives the same results as a local run.

The `slurm_cluster` fixture starts munged, slurmctld and slurmd on this machine (tests/slurm_cluster.py),
with all state under pytest's tmp dir, and stops them by process id afterwards. SLURM comes from
Debian's `slurm-wlm` and `munge`, installed by `.ci/install-slurm.sh` when missing. The tests skip,
saying why, only where SLURM cannot be installed or started; with `CI` set they fail instead.

    .venv/bin/python -m pytest tests/test_slurm.py -q -s
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import copy_workflow  # noqa: E402
from slurm_cluster import SlurmCluster, SlurmUnavailable, ensure_installed  # noqa: E402
from batchscale.store.cube import open_cube  # noqa: E402

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent  # jobs must find this python (and its snakemake, batchscale)

# Two runs, seconds each: digits, a linear model, one strategy, two batch sizes, one seed.
TINY_CONFIG = {
    "studies": {
        "tiny": {
            "dataset": {"name": "digits"},
            "model": {"name": "linear"},
            "eta0": 0.05,
            "base_batch": 32,
            "strategies": ["blr"],
            "batch_sizes": [32, 64],
            "seeds": [0],
            "epochs": 2,
            "device": "cpu",
        }
    }
}

# Fields that measure time (or hash files that contain times): they differ between any two runs.
TIMING = re.compile(r"wall|_seconds$|^sha256$")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str):
    """Skip, printing why, where SLURM cannot be had; fail instead in CI, where it must run."""
    if _in_ci():
        pytest.fail(f"{reason}\n(CI is set: the SLURM tests must run in CI, so this fails instead of skipping)")
    print(f"\nSKIP {reason}", file=sys.stderr)
    pytest.skip(reason.splitlines()[0])


def _require_plugin() -> None:
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError as exc:
        _unavailable(f"snakemake-executor-plugin-slurm is not installed ({exc}); pip install -e '.[slurm]'")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    _require_plugin()
    workdir = tmp_path_factory.mktemp("slurm")
    cluster = None
    try:
        ensure_installed(allow_install=os.environ.get("BATCHSCALE_SLURM_INSTALL", "1") != "0")
        cluster = SlurmCluster(workdir)
        cluster.start()
    except SlurmUnavailable as exc:
        _unavailable(f"cannot run a SLURM test cluster here: {exc}")
    print(f"\nSLURM test cluster up in {workdir}: pids {cluster.pids}, ports {cluster.ports}")
    try:
        yield cluster
    finally:
        cluster.stop()
        still = {name: alive for name, alive in cluster.alive().items() if alive}
        assert not still, f"daemons still running after stop: {still}"


def test_sbatch_roundtrip(slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    start = time.monotonic()
    jobid = slurm_cluster.sbatch(
        "--job-name", "roundtrip", "--output", str(out), "--chdir", str(tmp_path),
        "--wrap", "echo hello from $SLURM_JOB_ID on $(hostname -s)",
    )
    state = slurm_cluster.wait_job(jobid, timeout=60)
    elapsed = time.monotonic() - start
    assert state == "COMPLETED", slurm_cluster.log_tail()
    assert out.read_text().strip() == f"hello from {jobid} on {slurm_cluster.nodename}"
    # MinJobAge keeps the finished job visible to squeue (what the executor's status checks read)
    assert slurm_cluster.job_state(jobid) == "COMPLETED"
    print(f"sbatch round trip: job {jobid} {state} in {elapsed:.1f} s")


# -- the workflow on SLURM vs locally ----------------------------------------------------------

def _copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True)
    copy_workflow(dest)  # Snakefile, workflow/, profiles/, envs/
    # no config.yaml: the Snakefile's `configfile:` is skipped, so only the tiny config applies
    (dest / "tiny.yaml").write_text(yaml.safe_dump(TINY_CONFIG, sort_keys=False))
    return dest


def _snakemake(workdir: Path, args: list[str], env: dict[str, str], timeout: float = 600) -> float:
    env = dict(env)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    cmd = [str(VENV_BIN / "snakemake"), "--configfile", "tiny.yaml", *args]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        logs = []
        for path in sorted(workdir.glob(".snakemake/slurm_logs/**/*.log")) + sorted(workdir.glob("logs/**/*.log")):
            logs.append(f"--- {path.relative_to(workdir)}\n{path.read_text(errors='replace')[-3000:]}")
        pytest.fail(
            f"{' '.join(cmd)} failed ({proc.returncode}) in {workdir}\n{proc.stderr[-6000:]}\n" + "\n".join(logs)
        )
    return elapsed


def _comparable(value):
    """Arrays as (dtype, shape, raw bytes), so that == is bit equality (NaN included)."""
    if isinstance(value, np.ndarray):
        return (str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, np.generic):
        return (str(value.dtype), value.tobytes())
    return value


def _trace_contents(path: Path) -> dict:
    """Every attribute and dataset of a trace except timings, as (dtype, raw bytes) for bit equality."""
    import h5py

    items = {}
    with h5py.File(path, "r") as handle:
        for key, value in handle.attrs.items():
            if not TIMING.search(key):
                items[f"attr:{key}"] = _comparable(value)

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not TIMING.search(name.rsplit("/", 1)[-1]):
                items[f"data:{name}"] = _comparable(np.asarray(obj[()]))

        handle.visititems(visit)
    return items


def _strip_timing(obj):
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if not TIMING.search(k)}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def _cube_contents(path: Path) -> dict:
    """Coordinates, data variables (not timings) as raw bytes, and attributes (provenance without hashes)."""
    import xarray as xr

    items = {}
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        for name, var in list(ds.coords.items()) + list(ds.data_vars.items()):
            if TIMING.search(name):
                continue
            items[f"var:{name}"] = (var.dims, _comparable(np.asarray(var.values)))
        for key, value in ds.attrs.items():
            if key == "content_sha256":
                continue  # hashes the timing variables too; open_cube checks it against each cube's own contents
            if key.endswith("_json"):
                value = _strip_timing(json.loads(value))
            items[f"attr:{key}"] = _comparable(value)
    return items


def test_workflow_on_slurm_equals_local(slurm_cluster, tmp_path):
    if not (REPO / "Snakefile").is_file():
        pytest.fail(f"no Snakefile at {REPO}")
    local_dir = _copy_workflow(tmp_path / "local")
    slurm_dir = _copy_workflow(tmp_path / "slurm")

    local_s = _snakemake(local_dir, ["--cores", "2"], dict(os.environ))
    slurm_args = ["--profile", "profiles/slurm", "--profile", "profiles/slurm-local-test"]
    slurm_s = _snakemake(slurm_dir, slurm_args, slurm_cluster.env)
    print(f"\ntiny workflow: local --cores 2 {local_s:.1f} s; "
          f"snakemake {' '.join(slurm_args)}: {slurm_s:.1f} s")

    # the jobs really went through SLURM: both train runs and the cube, each COMPLETED (the plugin
    # sets each job's comment to rule_<name>[_wildcards_...]; MinJobAge keeps them in squeue)
    rows = slurm_cluster.run("squeue", "--noheader", "--states=all", "--format=%i|%T|%k").stdout.split()
    jobs = [row.split("|", 2) for row in rows]
    ran = sorted(re.sub(r"_wildcards_.*", "", comment) for _, state, comment in jobs if state == "COMPLETED")
    # one pack job per batch size (train_<study>_bs<m>_p<i>), each training that batch size's runs
    assert sum(r.startswith("rule_train_") for r in ran) == 2 and ran.count("rule_cube") == 1, rows

    traces = sorted(p.relative_to(local_dir) for p in local_dir.glob("results/tiny/traces/**/*.h5"))
    assert len(traces) == 2, traces
    for rel in traces:
        assert (slurm_dir / rel).is_file(), f"{rel} missing from the SLURM run"
        local, slurm = _trace_contents(local_dir / rel), _trace_contents(slurm_dir / rel)
        assert local.keys() == slurm.keys(), rel
        assert {"data:train_loss", "data:test_loss", "data:step", "attr:config_json"} <= local.keys(), sorted(local)
        differ = [key for key in local if local[key] != slurm[key]]
        assert not differ, f"{rel}: {differ} differ between the local and the SLURM run"

    for d in (local_dir, slurm_dir):
        open_cube(d / "results/tiny/cube.nc").close()  # its content hash matches what it holds
    local, slurm = (_cube_contents(d / "results/tiny/cube.nc") for d in (local_dir, slurm_dir))
    assert local.keys() == slurm.keys()
    assert {"var:train_loss", "var:status", "var:step"} <= local.keys(), sorted(local)
    differ = [key for key in local if local[key] != slurm[key]]
    assert not differ, f"cube.nc: {differ} differ between the local and the SLURM run"


def test_slurm_profile_requests_a_gpu_for_train(slurm_cluster, tmp_path):
    """The shipped profile asks for one GPU per pack job (train_*), the test override for none."""
    workdir = _copy_workflow(tmp_path / "wf")
    env = dict(slurm_cluster.env)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"

    def resources(*profiles: str) -> dict[str, str]:
        args = [arg for profile in profiles for arg in ("--profile", profile)]
        proc = subprocess.run(
            [str(VENV_BIN / "snakemake"), "-n", "--configfile", "tiny.yaml", *args],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        found, rule = {}, None
        for line in (proc.stdout + proc.stderr).splitlines():
            if m := re.match(r"^(?:local)?rule (\w+):", line):
                rule = m.group(1)
            elif (m := re.match(r"^\s+resources: (.*)", line)) and rule:
                found[rule] = m.group(1)
        return found

    def pack(found: dict[str, str]) -> str:
        return next(value for rule, value in found.items() if rule.startswith("train_"))

    shipped = resources("profiles/slurm")
    shipped["train"] = pack(shipped)
    assert "gpu=1" in shipped["train"] and "cpus_per_gpu=" in shipped["train"], shipped
    assert "slurm_partition=gpu" in shipped["train"], shipped
    assert "gpu=1" not in shipped["cube"] and "slurm_partition=cpu" in shipped["cube"], shipped
    test = resources("profiles/slurm", "profiles/slurm-local-test")
    test["train"] = pack(test)
    assert "gpu=1" not in test["train"] and "slurm_partition=debug" in test["train"], test
