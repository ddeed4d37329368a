"""The errors every stage reports in one line (the command line prints `batchscale: error: <message>`).

The leaf of the package: it imports nothing of batchscale, so any stage may raise these.
"""

from __future__ import annotations


class BatchscaleError(Exception):
    """An error whose message is one line saying what is wrong and what to do."""


class ConfigError(BatchscaleError, ValueError):
    """A bad config; the message is one line that names the key."""


class DataMissingError(ConfigError):
    """A real dataset's files are not under data_root (the message names the path and how to get them)."""


class ScalingRuleError(ConfigError):
    """A strategy that cannot apply to this optimizer or batch size; the message names both."""


class AnalysisInputError(ConfigError):
    """A file given to `batchscale analyze` (or another stage's input) that cannot be used."""


class TraceError(BatchscaleError, RuntimeError):
    """A trace file that is missing, truncated or not a batchscale trace."""


class StageInputError(BatchscaleError, RuntimeError):
    """A file a stage reads that is not what it claims to be (another study's, edited, damaged)."""


class MicroBatchTooLarge(BatchscaleError, RuntimeError):
    """A micro-batch (or an evaluation chunk) that does not fit in device memory."""


class OutputNotWritable(BatchscaleError, RuntimeError):
    """An output or checkpoint folder that cannot be written (found before any training step)."""
