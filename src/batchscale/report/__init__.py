"""What the pipeline reports, from the files it wrote: it reads them and computes nothing.

- `batchscale.report.figures`: every figure (PNG and SVG), drawing the numbers of the analysis files.
- `batchscale.report.summary`: results/summary.md from the headline numbers (results/summary.json).
- `batchscale.report.theory_figure`: the command that draws a least-squares study's theory figure.
- `batchscale.report.critical_lines`: a study's critical_batch.json in words, for logs and the terminal.
- `batchscale.report.tensorboard`: traces exported as TensorBoard scalars.
"""
