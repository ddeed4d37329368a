"""Every command the README shows, run from the root of a fresh copy of the repository, config.yaml included.

Small commands run for real; the default study's full run (minutes) and the paper grid (GPU-months) are
planned with `snakemake -n`; the paper preset is dry-run both locally and with the SLURM profile. For every
config shipped, the train jobs Snakemake plans equal the runs `batchscale plan` counts and the runs of the
config. The smoke preset's real run is tests/test_plan_presets.py::test_smoke_preset_runs_end_to_end_with_snakemake
(also in a fresh copy with config.yaml).
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from batchscale.spec.runs import iter_runs
from batchscale.validate import load_config
from batchscale.jobs.packs import all_packs
from batchscale.jobs.predict_packs import predict_packs
from conftest import REPO, VENV_BIN, copy_repository, tiny_config, workflow_env, write_config

pytestmark = pytest.mark.slow

README = REPO / "README.md"
SHIPPED_CONFIGS = ["config.yaml", "presets/paper.yaml", "presets/paper-smoke.yaml", "presets/diverge.yaml"]
# The files the real-data checks look for (src/batchscale/data/real.py), as empty placeholders: enough for a
# dry run of the paper preset, which never opens them.
PAPER_DATA_FILES = (
    [f"cifar-10-batches-py/{name}" for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]]
    + [f"cifar-100-python/{name}" for name in ("train", "test", "meta")]
    + [f"MNIST/raw/{name}" for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
    + [f"svhn/{name}_32x32.mat" for name in ("train", "test", "extra")]
    + [f"wikitext-2/wiki.{name}.tokens" for name in ("train", "valid", "test")]
    + [f"cityscapes/{name}_trainvaltest.zip" for name in ("leftImg8bit", "gtFine")]
)


def readme_commands() -> list[str]:
    """The commands of the README's ```bash blocks, without their trailing comments."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def planned_jobs(dry_run_output: str, prefix: str = "train_") -> int:
    """Jobs of the rules named `prefix...` (one rule per pack) in a `snakemake -n` plan's Job stats table."""
    table = dry_run_output[dry_run_output.index("Job stats"):]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", table, re.M))  # a dry run prints the table twice
    return sum(int(count) for rule, count in counts.items() if rule.startswith(prefix))


def planned_traces(dry_run_output: str) -> int:
    """Distinct trace files the plan will write: the runs that the pack jobs train."""
    return len(set(re.findall(r"results/[^\s,]+/traces/[^\s,]+\.h5", dry_run_output)))


def runs_in(config_path: Path) -> int:
    """Training runs a config asks for: (fixed strategies + tuned trials, both rounds) x batch sizes x seeds, and
    the prediction runs, summed over its studies, counted here from the config itself rather than through
    iter_runs."""
    config = load_config(config_path, check_data=False)
    total = 0
    for study in config["studies"].values():
        tuning = study.get("tuning") or {}
        trials = tuning.get("trials", 0) + ((tuning.get("refine") or {}).get("trials") or 0)
        per_seed = sum(trials if s == "tuned" else 1 for s in study["strategies"])
        total += per_seed * len(study["batch_sizes"]) * len(study["seeds"])
        predict = study.get("predict") or {}
        total += len(predict.get("seeds") or []) if predict.get("enabled") else 0  # one short run per seed
    return total


def train_jobs_for(config_path: Path) -> int:
    """Pack jobs the workflow plans for a config: one per pack (workflow/rules/common.smk's PACKS) and one per
    study that predicts (PREDICT_PACKS)."""
    config = load_config(config_path, check_data=False)
    return len(all_packs(config)) + len(predict_packs(config))


def run(workdir: Path, *command: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    executable = str(VENV_BIN / command[0]) if command[0] in ("snakemake", "python") else command[0]
    result = subprocess.run([executable, *command[1:]], cwd=workdir, env=workflow_env(), capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    root = copy_repository(tmp_path_factory.mktemp("clone"))
    assert (root / "config.yaml").exists() and (root / "Snakefile").exists()
    for name in PAPER_DATA_FILES:
        (root / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "data" / name).touch()
    write_config(root / "tiny.yaml", tiny_config(strategies=["blr"], batch_sizes=[32, 64], seeds=[0]))
    return root


@pytest.fixture(scope="module")
def dry_runs(fresh) -> dict:
    """`snakemake -n` of every shipped config, from the repository root (the paper preset on placeholders)."""
    outputs = {}
    for name in SHIPPED_CONFIGS:
        args = ["snakemake", "--cores", "2", "-n"] + ([] if name == "config.yaml" else ["--configfile", name])
        outputs[name] = run(fresh, *args).stdout
    return outputs


def plan_count(root: Path, config: str) -> tuple[int, int]:
    """(training runs, pack jobs) as `batchscale plan` prints them."""
    out = run(root, "python", "-m", "batchscale", "plan", config).stdout
    found = re.search(r"(\d+) training runs \(\d+ of them trials of the tuned search\) in (\d+) pack jobs", out)
    return int(found.group(1)), int(found.group(2))


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_planned_train_jobs_equal_plan_and_the_runs_of_the_config(fresh, dry_runs, name):
    runs = runs_in(REPO / name)
    assert planned_jobs(dry_runs[name]) + planned_jobs(dry_runs[name], "predict_train_") == train_jobs_for(REPO / name)
    assert planned_traces(dry_runs[name]) == runs
    assert plan_count(fresh, name) == (runs, train_jobs_for(REPO / name))
    # only this config's studies are planned: no default study leaks into a preset
    studies = set(load_config(REPO / name, check_data=False)["studies"])
    planned_studies = set(re.findall(r"results/([^/\s]+)/cube\.nc", dry_runs[name]))
    assert planned_studies == studies


def test_every_readme_command_is_covered_here():
    assert set(readme_commands()) == set(HANDLED), set(readme_commands()) ^ set(HANDLED)


def test_the_install_command_names_extras_that_exist():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "pytest" in " ".join(extras["test"])
    # the SLURM profile's executor comes from this extra; a dry run does not need it, a real one does
    assert any(dep.startswith("snakemake-executor-plugin-slurm") for dep in extras["slurm"])


def test_default_run_plans_from_the_root_and_a_tiny_configfile_runs_for_real(fresh, dry_runs):
    assert planned_traces(dry_runs["config.yaml"]) == runs_in(REPO / "config.yaml")
    run(fresh, "snakemake", "--cores", "2", "--configfile", "tiny.yaml")
    # config.yaml's studies stay out (beside the study folders, only the run's summary files)
    assert sorted(p.name for p in (fresh / "results").iterdir()) == ["summary-tiny.json", "summary-tiny.md", "tiny"]
    again = run(fresh, "snakemake", "--cores", "2", "--configfile", "tiny.yaml", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_validate_command_runs(fresh):
    # `batchscale plan presets/paper.yaml` runs in test_planned_train_jobs_equal_plan_and_the_runs_of_the_config
    write_config(fresh / "my.yaml", tiny_config())
    out = run(fresh, "python", "-m", "batchscale", "validate", "my.yaml").stdout
    assert out.strip() == "my.yaml: valid; 1 studies, 2 training runs"


def test_paper_preset_dry_runs_with_the_slurm_profile_and_a_site_profile(fresh, dry_runs):
    expected = planned_jobs(dry_runs["presets/paper.yaml"])
    slurm = run(fresh, "snakemake", "--profile", "profiles/slurm", "--configfile", "presets/paper.yaml", "-n")
    assert planned_jobs(slurm.stdout) == expected == train_jobs_for(REPO / "presets/paper.yaml")
    assert planned_traces(slurm.stdout) == runs_in(REPO / "presets/paper.yaml")
    site = fresh / "my-site"
    site.mkdir(exist_ok=True)
    (site / "config.yaml").write_text("default-resources:\n  slurm_partition: short\n  mem_mb: 2000\n  runtime: 30\n")
    both = run(fresh, "snakemake", "--profile", "profiles/slurm", "--profile", "my-site", "--configfile",
               "presets/paper.yaml", "-n")
    assert planned_jobs(both.stdout) == expected


def test_an_interrupted_run_finishes_with_unlock_and_rerun_incomplete(fresh, tmp_path):
    """Kill snakemake (SIGKILL, no clean-up) while a train job runs; the README's two commands finish the run."""
    work = copy_repository(tmp_path)
    slow = tiny_config(strategies=["blr"], batch_sizes=[32, 64], seeds=[0], epochs=40)
    write_config(work / "slow.yaml", slow)
    process = subprocess.Popen([str(VENV_BIN / "snakemake"), "--cores", "1", "--configfile", "slow.yaml"], cwd=work,
                               env=workflow_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.time() + 120
        incomplete = work / ".snakemake" / "incomplete"
        while time.time() < deadline and not (incomplete.exists() and any(incomplete.iterdir())):
            time.sleep(0.2)
        assert incomplete.exists() and any(incomplete.iterdir()), "no job started within 2 minutes"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # snakemake and its job: no lock released, nothing cleaned
        process.wait()
    locked = run(work, "snakemake", "--cores", "2", "--configfile", "slow.yaml", check=False)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    run(work, "snakemake", "--unlock", "--configfile", "slow.yaml")
    # Traces are written under a temporary name, so the killed job left no output; a job writing in place (a
    # figure) would leave a partial one. Put one where the killed job's output goes: Snakemake then refuses
    # to go on without --rerun-incomplete, and with it redoes the job.
    marked = [base64.b64decode(p.name).decode() for p in incomplete.iterdir()]
    assert marked and all(not (work / name).exists() for name in marked)
    (work / marked[0]).write_bytes(b"half a file")
    refused = run(work, "snakemake", "--cores", "2", "--configfile", "slow.yaml", check=False)
    assert refused.returncode != 0 and "IncompleteFilesException" in refused.stdout + refused.stderr
    finished = run(work, "snakemake", "--cores", "2", "--rerun-incomplete", "--configfile", "slow.yaml")
    for key in iter_runs(load_config(work / "slow.yaml")):
        assert (work / key.trace_path).exists(), key
    assert (work / "results" / "tiny" / "speedup.csv").exists()
    again = run(work, "snakemake", "--cores", "2", "--configfile", "slow.yaml", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr, finished.stdout[-2000:]


# README command -> the test above that runs it (or says why it is not run as written)
HANDLED = {
    'python3 -m venv .venv && source .venv/bin/activate && pip install -e ".[test,slurm]"':
        "test_the_install_command_names_extras_that_exist (needs the network)",
    "snakemake --cores 2": "dry_runs + test_default_run_plans_from_the_root_and_a_tiny_configfile_runs_for_real",
    "python -m pytest": "this suite",
    "snakemake --cores 2 --configfile presets/paper-smoke.yaml": "dry_runs; real run in test_plan_presets.py",
    "python -m batchscale plan presets/paper.yaml": "plan_count in test_planned_train_jobs_equal_plan_and_the_runs_of_the_config",
    "snakemake --profile profiles/slurm --configfile presets/paper.yaml":
        "test_paper_preset_dry_runs_with_the_slurm_profile_and_a_site_profile",
    "python -m batchscale validate my.yaml": "test_validate_command_runs",
    "source .venv/bin/activate": "the environment these tests run in",
    "snakemake --profile profiles/slurm --profile my-site --configfile presets/paper.yaml":
        "test_paper_preset_dry_runs_with_the_slurm_profile_and_a_site_profile",
    "snakemake --unlock": "test_an_interrupted_run_finishes_with_unlock_and_rerun_incomplete",
    "snakemake --cores 2 --rerun-incomplete": "test_an_interrupted_run_finishes_with_unlock_and_rerun_incomplete",
    "python -m batchscale validate mine.yaml": "test_own_model.py (the worked example, from a clean folder)",
    "snakemake --cores 2 --configfile mine.yaml": "test_own_model.py",
    "snakemake --cores 2 --config file=my.yaml": "test_a_config_named_by_config_file_is_planned_alone",
    "snakemake --cores 2 --config file=their.yaml": "test_a_config_named_by_config_file_is_planned_alone; "
                                                     "test_bad_input.py (YTE refused, never evaluated)",
}


def test_a_config_named_by_config_file_is_planned_alone(fresh):
    write_config(fresh / "my.yaml", tiny_config())
    dry = run(fresh, "snakemake", "--cores", "2", "--config", "file=my.yaml", "-n")
    planned = set(re.findall(r"results/([^/\s]+)/cube\.nc", dry.stdout + dry.stderr))
    assert planned == {"tiny"} and "results/summary-my.md" in dry.stdout + dry.stderr
