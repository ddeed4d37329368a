"""scripts/check_readme_numbers.py: every decimal number quoted in a marked README section is in the summary."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "scripts" / "check_readme_numbers.py"
README = """# x
B_crit 9.6 outside the marked text is not checked.
<!-- numbers: results/summary.md -->
- blr: B_crit = 9.6 [7.0, 12.4] at eps 0.089, ×1.6 at m = 8
<!-- end numbers -->
"""


def check(tmp_path, summary: str) -> subprocess.CompletedProcess:
    (tmp_path / "README.md").write_text(README)
    (tmp_path / "summary.md").write_text(summary)
    return subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "summary.md"), str(tmp_path / "README.md")],
                          capture_output=True, text=True)


def test_every_quoted_number_found(tmp_path):
    done = check(tmp_path, "| blr | 0.089 | 9.6 [7.0, 12.4] | ×1.6 |")
    assert done.returncode == 0 and "5 of 5 quoted numbers found" in done.stdout


def test_a_number_the_summary_does_not_hold_is_named(tmp_path):
    done = check(tmp_path, "| blr | 0.0891 | 9.6 [7.0, 12.4] | ×1.6 |")
    assert done.returncode == 1 and "README line 4: 0.089 is not in" in done.stdout


def test_a_section_of_another_summary_is_checked_against_that_one_only(tmp_path):
    readme = README + "<!-- numbers: results/summary-predict.md -->\nB_pred 58.6\n<!-- end numbers -->\n"
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / "summary.md").write_text("| blr | 0.089 | 9.6 [7.0, 12.4] | ×1.6 |")
    (tmp_path / "summary-predict.md").write_text("| a | 58.6 |")
    for name, found in (("summary.md", "5 of 5"), ("summary-predict.md", "1 of 1")):
        done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / name), str(tmp_path / "README.md")],
                              capture_output=True, text=True)
        assert done.returncode == 0 and f"{found} quoted numbers found" in done.stdout, done.stdout
