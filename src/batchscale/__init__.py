"""batchscale: measure how SGD training speed scales with the batch size."""

__version__ = "0.1.0"
