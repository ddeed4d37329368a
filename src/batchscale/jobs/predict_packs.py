"""The prediction runs as train jobs: one pack per study with `predict.enabled` (its seeds at the prediction
batch size, trained together like a pack of the grid), a pure function of the config.

A PredictPack has the attributes of jobs.packs.Pack that workflow/rules/predict.smk and the pack helpers
(pack_threads, pack_mem_mb, pack_runtime_min) read: study, batch_size, keys, name, checkpoint, log, inputs,
outputs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from batchscale.jobs.packs import pack_threads
from batchscale.spec.manifest import PREDICT_CHECKPOINT, PREDICT_LOG
from batchscale.spec.predict import predict_batch_size, predict_enabled, predict_run_config, predict_trace_paths


@dataclass(frozen=True)
class PredictPack:
    study: str
    batch_size: int
    keys: tuple[int, ...]  # the seeds, one run each
    outputs: tuple[str, ...]

    @property
    def name(self) -> str:
        """The Snakemake rule that trains it (`snakemake --forcerun <name>`)."""
        return re.sub(r"\W", "_", f"predict_train_{self.study}_bs{self.batch_size}")

    @property
    def checkpoint(self) -> str:
        return PREDICT_CHECKPOINT.format(study=self.study, batch_size=self.batch_size)

    @property
    def log(self) -> str:
        return PREDICT_LOG.format(study=self.study, batch_size=self.batch_size)

    @property
    def inputs(self) -> list[str]:
        return []


def predict_packs(config: dict) -> list[PredictPack]:
    """One pack per study that predicts, in config order."""
    packs = []
    for name, study in config["studies"].items():
        if predict_enabled(study):
            packs.append(PredictPack(name, predict_batch_size(study), tuple(int(s) for s in study["predict"]["seeds"]),
                                     tuple(predict_trace_paths(name, study))))
    return packs


def predict_runs_json(config: dict, pack: PredictPack) -> str:
    """The pack's run configs as compact JSON ({"shared", "runs"}, as jobs.packs.pack_runs_json)."""
    runs = [predict_run_config(config, pack.study, seed) for seed in pack.keys]
    shared = {name: value for name, value in runs[0].items() if all(run.get(name, ...) == value for run in runs)}
    own = [{name: value for name, value in run.items() if name not in shared} for run in runs]
    return json.dumps({"shared": shared, "runs": own}, sort_keys=True, separators=(",", ":"))


def predict_threads(config: dict, pack: PredictPack) -> int:
    """CPU threads of the job, by the grid's rule (jobs.packs.pack_threads), from the config alone."""
    return pack_threads(config, pack)
