"""Check that every number the README quotes from a run is in that run's summary.

    python scripts/check_readme_numbers.py results/summary.md [README.md]

The README marks the text it writes from a fresh run's summary between `<!-- numbers: results/summary.md -->`
and `<!-- end numbers -->` (a preset's sections name its own summary, `results/summary-predict.md`, and are
checked when that file is given). Every number with a decimal point there (0.089, 110.9, ×1.6, [7.0, 12.4]) must
appear, written the same way, in the summary; whole numbers (batch sizes, counts, years) are left alone, as
they also name configuration. Prints each number not found and exits 1 if there is one.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

BEGIN = re.compile(r"<!-- numbers: (?P<source>[^ ]+) -->")
END = "<!-- end numbers -->"
NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+(?:e[-+]?\d+)?(?![\w.])")


def quoted_numbers(readme: str, summary_name: str | None = None) -> list[tuple[int, str]]:
    """(line, number) of every decimal number inside the marked sections (those whose source file is named
    `summary_name`, when given: a preset's summary-<name>.md is checked against its own sections)."""
    found, inside = [], False
    for index, line in enumerate(readme.splitlines(), 1):
        begin = BEGIN.search(line)
        if begin:
            inside = summary_name is None or Path(begin.group("source")).name == summary_name
            continue
        if END in line:
            inside = False
        elif inside:
            found += [(index, match.group(0)) for match in NUMBER.finditer(line)]
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    summary = Path(argv[0]).read_text()
    readme = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parents[1] / "README.md").read_text()
    summary_numbers = set(NUMBER.findall(summary))
    quoted = quoted_numbers(readme, Path(argv[0]).name)
    if not quoted:
        print("no marked section with numbers in the README")
        return 1
    missing = [(line, number) for line, number in quoted if number not in summary_numbers]
    for line, number in missing:
        print(f"README line {line}: {number} is not in {argv[0]}")
    print(f"{len(quoted) - len(missing)} of {len(quoted)} quoted numbers found in {argv[0]}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
