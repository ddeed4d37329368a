"""Reports that read files the pipeline wrote and compute nothing: `batchscale.report.tensorboard` exports
traces as TensorBoard scalars."""
