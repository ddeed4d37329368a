"""batchscale: measure how SGD training speed scales with the batch size.

The Python API (README, "Python API"):

- `fit_critical_batch(df, batch_size="batch_size", steps="steps", seed=None)`: B_crit of k(m) = S_min (1 +
  B_crit/m) with its interval, bound and fit quality, and the overhead-based critical batch (a `CriticalBatch`);
- `speedup_table(df, ...)`: speedup, efficiency (with intervals) and regime per batch size (a DataFrame);
- `open_study("results/digits_mlp")`: a study's tables, critical_batch.json and cube (a `StudyResults`).

They run the workflow's own functions (batchscale.analysis.api and .results).
"""

from __future__ import annotations

import importlib

from batchscale.version import __version__

# The API is loaded on first use (PEP 562), not here: every `python -m batchscale <stage>` and every rule
# imports this package first, and a training job (batchscale.engine) must not pay for pandas, scipy and
# xarray, which the analysis needs and the engine does not. `import batchscale.engine.pack` loads none of them.
_API = {
    "fit_critical_batch": "batchscale.analysis.api",
    "speedup_table": "batchscale.analysis.api",
    "CriticalBatch": "batchscale.analysis.api",
    "Interval": "batchscale.analysis.api",
    "open_study": "batchscale.analysis.results",
    "StudyResults": "batchscale.analysis.results",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    raise AttributeError(f"module 'batchscale' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
