"""batchscale: measure how SGD training speed scales with the batch size."""

from batchscale.version import __version__

__all__ = ["__version__"]
