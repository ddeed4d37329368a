"""theory.json of a least-squares study: λ₁, β and the predicted lsr breakdown, from the study's own data.

    python -m batchscale.analysis.theory_check theory --study-json JSON --out results/<study>/theory.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from batchscale.analysis.least_squares import design_matrix, least_squares_theory
from batchscale.data import load_dataset


def theory_document(study: dict) -> dict:
    """The theory.json document of a study the theory describes (`least_squares.has_theory`).

    Args:
      study: the resolved study config.

    Returns:
      `least_squares.least_squares_theory` of the study's training inputs (with the bias column), its eta0,
      base batch, batch sizes and momentum.
    """
    splits = load_dataset(study["dataset"], download=False)
    return least_squares_theory(design_matrix(splits.train_x.double().numpy()), study["eta0"],
                                study["base_batch"], study["batch_sizes"],
                                float(study.get("optimizer", {}).get("momentum", 0.0)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m batchscale.analysis.theory_check",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("theory", help="λ₁, β and the predicted lsr breakdown of a least-squares study")
    t.add_argument("--study-json", required=True)
    t.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    doc = theory_document(json.loads(args.study_json))
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
