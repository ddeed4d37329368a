"""Every rule that runs batchscale code carries a hash of that code as a param, so that an edit to the code
reruns what it produces (Snakemake's own `code` trigger sees only the text of a `shell:` command)."""

from __future__ import annotations

import re

from conftest import REPO

RULES = REPO / "workflow" / "rules"
# which hash a rule must carry, by the module its command runs
EXPECTED = {
    "batchscale train": "train_fingerprint",  # the train stage's code and the study's own modules
    "batchscale branch-base": "BRANCH_SOURCE",
    "batchscale branch ": "BRANCH_SOURCE",
    "batchscale cube": "CUBE_SOURCE",
    "batchscale tables": "ANALYSIS_SOURCE",
    "batchscale compare-tables": "ANALYSIS_SOURCE",
    "batchscale tuning-round1": "ANALYSIS_SOURCE",
    "batchscale branch-table": "ANALYSIS_SOURCE",
    "batchscale figures": "FIGURES_SOURCE",
    "batchscale tuned-figures": "FIGURES_SOURCE",
    "batchscale compare ": "FIGURES_SOURCE",
    "batchscale theory-figure": "FIGURES_SOURCE",
    "batchscale branch-figure": "FIGURES_SOURCE",
    "batchscale theory ": "SUMMARY_SOURCE",
    "batchscale summary": "SUMMARY_SOURCE",
    "batchscale predict ": "PREDICT_SOURCE",
    "batchscale prediction-validation": "PREDICT_SOURCE",
    "batchscale prediction-figure": "FIGURES_SOURCE",
}


def rule_blocks():
    for path in sorted(RULES.glob("*.smk")):
        text = path.read_text()
        starts = [m.start() for m in re.finditer(r"^\s*(?:rule\b.*|use rule .*):\s*$", text, re.M)]
        for begin, end in zip(starts, starts[1:] + [len(text)]):
            yield path.name, text[begin:end]


def test_every_rule_running_batchscale_carries_the_hash_of_its_code():
    checked = 0
    for name, block in rule_blocks():
        command = re.search(r'"python -m (batchscale[^"]*)"', block)
        if not command:
            continue
        wanted = [hash_name for prefix, hash_name in EXPECTED.items() if command.group(1).startswith(prefix)]
        assert wanted, f"{name}: a rule runs `python -m {command.group(1)}`, which this test does not know"
        params = block.split("params:", 1)[1] if "params:" in block else ""
        assert re.search(rf"^\s+\w+={wanted[0]}\b.*,?\s*$", params, re.M), (
            f"{name}: the rule running `{command.group(1)}` has no param ={wanted[0]}:\n{block}")
        checked += 1
    assert checked >= len(EXPECTED) - 1  # every kind of command was found (compare and compare-tables share a rule file)


def test_every_stage_entry_is_a_module_of_the_package():
    """A stage entry that names no file hashes nothing: an edit of the code it meant would rerun nothing."""
    from batchscale.jobs.fingerprints import STAGE_ENTRIES, module_file

    missing = [f"{stage}: {entry}" for stage, entries in STAGE_ENTRIES.items() for entry in entries
               if module_file(entry) is None]
    assert not missing, "stage entries that are no module: " + ", ".join(missing)


def test_snakemake_lint_is_clean_from_the_repository_root():
    import subprocess

    from conftest import VENV_BIN, workflow_env

    done = subprocess.run([str(VENV_BIN / "snakemake"), "--lint"], cwd=REPO, env=workflow_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Congratulations, your workflow is in a good condition!" in done.stdout + done.stderr, (
        (done.stdout + done.stderr)[-3000:])
