"""The optimizers a study may use and the config keys each reads (the engine's are batchscale.engine.optim)."""

from __future__ import annotations

from batchscale.errors import ScalingRuleError

OPTIMIZERS = ("sgd", "adamw")
# Keys of the optimizer config each optimizer reads; a run's config carries only these (so adding AdamW's
# keys to the schema does not change the config hash, and so the rerun trigger, of existing SGD runs).
OPTIMIZER_KEYS = {"sgd": ("momentum", "nesterov", "weight_decay", "grad_clip"),
                  "adamw": ("name", "betas", "eps", "weight_decay", "grad_clip")}


def optimizer_name(optimizer: dict) -> str:
    name = optimizer.get("name", "sgd")
    if name not in OPTIMIZERS:
        raise ScalingRuleError(f"optimizer {name!r} is not allowed; allowed values: {', '.join(OPTIMIZERS)}")
    return name


def optimizer_settings(optimizer: dict) -> dict:
    """The optimizer config a run needs: the keys its optimizer reads, nothing else."""
    return {key: optimizer[key] for key in OPTIMIZER_KEYS[optimizer_name(optimizer)] if key in optimizer}
