"""The figures of a study by name: each figure module registers the function that draws it.

A figure of STUDY_FIGURES or TUNED_FIGURES (batchscale.spec.manifest) is one function
``draw(study: FigureInputs) -> Figure`` decorated with ``@figure(name)`` in any module of this package; the
package imports every module, so a new figure is its module, its entry in the manifest and its caption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from matplotlib.figure import Figure


@dataclass(frozen=True)
class FigureInputs:
    """What a study's figures are drawn from.

    Attributes:
      tables: the study's analysis files, {stem: DataFrame or None} for the CSV files and
        {"critical_batch": dict} (`batchscale.report.figures.read_study_tables`).
      config: the study config.
      title: the study's name with its description.
      cube: the study cube, for figures that draw raw traces; None where the rule reads the tables only.
    """

    tables: dict
    config: dict
    title: str
    cube: object = None


FIGURES: dict[str, Callable[[FigureInputs], Figure]] = {}


def figure(name: str):
    """Register the decorated function as the one that draws figure `name`."""
    def register(draw: Callable[[FigureInputs], Figure]):
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is registered twice ({FIGURES[name].__module__}, {draw.__module__})")
        FIGURES[name] = draw
        return draw
    return register
