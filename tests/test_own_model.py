"""The README's worked example of your own model and dataset, run as written from a clean folder: its files
are taken from the README's code blocks, then both validate commands and the workflow run."""

from __future__ import annotations

import re
import subprocess

import pandas as pd
import pytest

from conftest import REPO, VENV_BIN, copy_workflow, workflow_env

pytestmark = pytest.mark.slow

SECTION = "## Adding your own model or dataset"


def readme_example() -> tuple[dict[str, str], list[str]]:
    """{file name: text} of the section's code blocks whose first line names a file, and its shell commands."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    files, commands = {}, []
    for language, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        first = body.splitlines()[0] if body.strip() else ""
        if language == "bash":
            commands += [line.split("#")[0].strip() for line in body.splitlines() if line.strip()]
        elif first.startswith("# ") and "/" in first or first.endswith(".yaml"):
            files[first[2:].strip()] = body
    return files, commands


def test_the_readme_example_runs_from_a_clean_folder(tmp_path):
    files, commands = readme_example()
    assert set(files) == {"mylab/__init__.py", "mylab/data.py", "mylab/models.py", "mine.yaml"}
    workdir = copy_workflow(tmp_path)
    for name, body in files.items():
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_text(body)
    assert commands[0] == "python -m batchscale validate mine.yaml"
    env = workflow_env()
    env.pop("PYTHONPATH", None)  # found from the working directory alone
    for command in (commands[0], "batchscale validate mine.yaml", commands[1]):
        executable, *args = command.split()
        done = subprocess.run([str(VENV_BIN / executable), *args], cwd=workdir, env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert "valid; 1 studies, 24 training runs" in subprocess.run(
        [str(VENV_BIN / "batchscale"), "validate", "mine.yaml"], cwd=workdir, env=env, capture_output=True,
        text=True).stdout
    speedup = pd.read_csv(workdir / "results/cancer_tabnet/speedup.csv")
    assert set(speedup["strategy"]) == {"blr", "lsr"} and set(speedup["batch_size"]) == {8, 16, 32, 64}
    assert (workdir / "results/summary-mine.md").read_text().count("cancer_tabnet") >= 1
