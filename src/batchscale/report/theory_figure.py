"""The theory figure of a least-squares study (``theory_lsr_breakdown``), drawn by
`batchscale.report.figures.theory_check` from theory.json and speedup_common.csv:

    python -m batchscale.report.theory_figure --theory THEORY_JSON --common SPEEDUP_COMMON_CSV --out PATH
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from batchscale.report.figures.base import save_figure
from batchscale.report.figures.theory_check import theory_figure


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m batchscale.report.theory_figure")
    parser.add_argument("--theory", required=True)
    parser.add_argument("--common", required=True)
    parser.add_argument("--out", required=True, help="path without extension; .png and .svg are written")
    args = parser.parse_args(argv)
    fig = theory_figure(json.loads(Path(args.theory).read_text()), pd.read_csv(args.common))
    out = Path(args.out)
    save_figure(fig, out.parent, out.name)


if __name__ == "__main__":
    main()
