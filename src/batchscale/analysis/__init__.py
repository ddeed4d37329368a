"""Analysis of batch-size scaling: every number the report draws or quotes is computed here, once.

Measurements, small pure functions over arrays and tables:
- `thresholds`: the threshold rules and eps per strategy; `steps`: k(m; eps), iterations to threshold;
  `intervals`: seed means and their intervals; `speedup`: speedup, efficiency and regimes;
  `critical`: the critical-batch fit, its bounds and intervals, the overhead-based critical batch;
  `tuned`: steps to result of a learning-rate search; `noise`: the gradient noise scale;
  `branching`: the local critical batch; `theory`: the least-squares theory of SGD.

Tables and documents, from a study cube (read through `accessors`):
- `curves`: one curve (a strategy and metric at one eps): its speedup rows and critical-batch entry, shared
  by studies and comparisons; `study`: every table of a study (speedup.csv, critical_batch.json, ...);
  `accuracy`: accuracy.csv/.md and linear_error.csv; `tuned_tables`: tuned.csv and tuned_trials.csv;
  `comparison`: a comparison's speedup.csv; `external`: the same tables from a CSV of a sweep run
  elsewhere; `headline`: the headline numbers of the whole run (results/summary.json);
  `least_squares` and `theory_check`: the least-squares theory check (theory.json).

The Python API (exposed by the package face; README, "Python API"): `api` (fit_critical_batch and speedup_table of a
DataFrame, through `external`) and `results` (open_study: a study's folder read with the stages' checks).
"""
