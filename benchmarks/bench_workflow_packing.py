"""The default study's grid through Snakemake: packed (one job per pack) against unpacked (one job per run).

    python benchmarks/bench_workflow_packing.py              (the default config as is: long on 2 cores)
    python benchmarks/bench_workflow_packing.py --epochs 10  (the same grid, fewer epochs)

Copies the workflow into two temporary directories with the default config.yaml (optionally with fewer
epochs for every study), once as it is (packs as the config groups them: jobs.packs) and once with
`pack: {seeds_per_pack: 1, trials_per_pack: 1}` in its defaults, which makes every run its own job, as before packing. Runs
`snakemake --cores N` on the study cubes (training plus one cube job per study, the same in both) and
prints both wall times and their ratio. The traces are the same either way (tests/test_packing.py).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def workflow_copy(target: Path, config: dict) -> Path:
    shutil.copy(REPO / "Snakefile", target / "Snakefile")
    for folder in ("workflow", "envs"):
        shutil.copytree(REPO / folder, target / folder)
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def wall_seconds(workdir: Path, cores: int, targets: list[str]) -> float:
    began = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--cores", str(cores), *targets], cwd=workdir, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"snakemake failed in {workdir}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - began


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every study (default: the config's)")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    if args.epochs:
        config["defaults"]["epochs"] = args.epochs
    config.pop("comparisons", None)
    targets = [f"results/{study}/cube.nc" for study in config["studies"]]
    unpacked = {**config, "defaults": {**config["defaults"], "pack": {"seeds_per_pack": 1, "trials_per_pack": 1}}}
    with tempfile.TemporaryDirectory() as packed_dir, tempfile.TemporaryDirectory() as unpacked_dir:
        packed_s = wall_seconds(workflow_copy(Path(packed_dir), config), args.cores, targets)
        print(f"packed:   {packed_s:7.1f} s", flush=True)
        unpacked_s = wall_seconds(workflow_copy(Path(unpacked_dir), unpacked), args.cores, targets)
        print(f"unpacked: {unpacked_s:7.1f} s (one job per run)")
    epochs = f"{args.epochs} epochs per study" if args.epochs else "the config's epochs"
    print(f"default grid ({epochs}), --cores {args.cores}: packed is {unpacked_s / packed_s:.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
