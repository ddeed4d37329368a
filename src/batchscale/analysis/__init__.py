"""Analysis of batch-size scaling.

- `batchscale.analysis.measurements`: pure functions over arrays (k, thresholds, speedup, regimes,
  critical batch fit, bootstraps).
- `batchscale.analysis.tables`: the study tables (speedup.csv, critical_batch.json, accuracy.csv/.md)
  from a cube; column definitions and units in its module docstring.
- `batchscale.analysis.external`: the same tables from a CSV of a sweep run elsewhere.
"""
