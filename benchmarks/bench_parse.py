"""What `snakemake -n` costs before any job runs: CPU seconds and peak memory of parsing and planning.

    python benchmarks/bench_parse.py                      (default config in a fresh copy, and a 10,000-run grid)
    python benchmarks/bench_parse.py --workdir .          (also the default config in a folder with a finished run)
    python benchmarks/bench_parse.py --repeats 5

For each case: the first parse of a config (cold: validation builds the datasets and models, in a child
process) and the parses after it (warm: the validated config is read from .snakemake/batchscale/). CPU is
user + system time of snakemake and its children; peak memory is the largest resident set of any one of
those processes (the kernel's ru_maxrss over waited-for children). A baseline measured in the same run,
`snakemake -n` on a Snakefile with one rule, gives the ratio that the machine's speed cancels out of.

The 10,000-run grid: 10 teacher studies x 10 batch sizes x 4 fixed strategies x 25 seeds (1,000 packs).
Targets (issue: same config, same numbers): the default config at most 3.07 s of CPU (a third of the 9.2 s of
62b5fb6 on a finished run); the 10,000-run grid under 1 GB and under 30 s.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def grid_config(studies: int = 10, batch_sizes: int = 10, seeds: int = 25) -> dict:
    """studies x batch_sizes x 4 strategies x seeds runs of a small teacher MLP."""
    study = {"dataset": {"name": "teacher", "options": {"n_train": 2 ** (batch_sizes + 2)}},
             "model": {"name": "mlp", "options": {"hidden": [32]}}, "eta0": 0.01, "base_batch": 4,
             "epochs": 1, "batch_sizes": {"min": 4, "max": 2 ** (batch_sizes + 1)},
             "strategies": ["blr", "lsr", "srsr", "longer"], "seeds": list(range(seeds)), "device": "cpu"}
    return {"studies": {f"grid{i}": dict(study) for i in range(studies)}}


def workflow_copy(target: Path, config: dict | None) -> Path:
    shutil.copy(REPO / "Snakefile", target / "Snakefile")
    for folder in ("workflow", "envs"):
        shutil.copytree(REPO / folder, target / folder)
    if config is None:
        shutil.copy(REPO / "config.yaml", target / "config.yaml")
    else:
        (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def measure(workdir: Path) -> tuple[float, float, float]:
    """(CPU seconds, wall seconds, peak MB) of one `snakemake -n` in `workdir`, in a fresh child."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             f"done = subprocess.run([{SNAKEMAKE!r}, '-n', '--quiet'], capture_output=True, text=True); "
             "wall = time.perf_counter() - t; u = resource.getrusage(resource.RUSAGE_CHILDREN); "
             "sys.stderr.write(done.stderr[-2000:] if done.returncode else ''); "
             "print(u.ru_utime + u.ru_stime, wall, u.ru_maxrss / 1024, done.returncode)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=workdir, capture_output=True, text=True)
    cpu, wall, peak, code = out.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"snakemake -n failed in {workdir}:\n{out.stderr}")
    return float(cpu), float(wall), float(peak)


def report(label: str, workdir: Path, repeats: int, baseline_cpu: float, cold: bool = True) -> None:
    if cold:
        shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
        cpu, wall, peak = measure(workdir)
        print(f"{label:<34} cold  cpu {cpu:6.2f} s  wall {wall:6.2f} s  peak {peak:7.0f} MB  "
              f"({cpu / baseline_cpu:5.1f}x bare snakemake)", flush=True)
    warm = [measure(workdir) for _ in range(repeats)]
    cpu = statistics.median(w[0] for w in warm)
    wall = statistics.median(w[1] for w in warm)
    peak = max(w[2] for w in warm)
    print(f"{label:<34} warm  cpu {cpu:6.2f} s  wall {wall:6.2f} s  peak {peak:7.0f} MB  "
          f"({cpu / baseline_cpu:5.1f}x bare snakemake; median of {repeats})", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="also measure in this folder as it is (e.g. the repository after a default run)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        bare = root / "bare"
        bare.mkdir()
        (bare / "Snakefile").write_text('rule all:\n    output: "x"\n    shell: "touch {output}"\n')
        baseline = statistics.median(measure(bare)[0] for _ in range(args.repeats))
        print(f"{'bare snakemake (one rule)':<34}       cpu {baseline:6.2f} s", flush=True)
        default = workflow_copy(root / "default", None) if (root / "default").mkdir() is None else None
        report("default config, no results", default, args.repeats, baseline)
        if args.workdir is not None:
            finished = (args.workdir / "results").is_dir()
            report(f"default config, {'finished run' if finished else 'as is'} ({args.workdir})",
                   args.workdir.resolve(), args.repeats, baseline, cold=False)
        grid = root / "grid"
        grid.mkdir()
        workflow_copy(grid, grid_config())
        report("10,000-run grid (1,000 packs)", grid, args.repeats, baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
