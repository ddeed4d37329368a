"""theory.json of a least-squares study: λ₁, β and the predicted lsr breakdown, from the study's own data.

    python -m batchscale.analysis.theory_check theory --study-json JSON --out results/<study>/theory.json
"""

from __future__ import annotations


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
