"""Which runs train together: the packs of a grid, and which of their runs still need training.

A pack is a chunk (at most `pack.max_runs`, in a stable order: seed, then strategy) of the runs of one
study at one batch size. Its Snakemake job trains only the runs of the chunk whose trace is missing or
stale (written for another run config or by another engine source), so adding a seed, a strategy or a
batch size trains the new runs only, and a run's config change retrains that run (with the other stale
runs of its chunk).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from batchscale.config import RunKey, config_hash, run_config


@dataclass(frozen=True)
class Pack:
    study: str
    batch_size: int
    index: int
    keys: tuple[RunKey, ...]  # the runs this pack's job trains

    @property
    def name(self) -> str:
        return re.sub(r"\W", "_", f"train_{self.study}_bs{self.batch_size}_p{self.index}")

    @property
    def checkpoint(self) -> str:
        return f"results/{self.study}/checkpoints/bs{self.batch_size}/pack{self.index}.pt"

    @property
    def log(self) -> str:
        return f"logs/{self.study}/train/bs{self.batch_size}/pack{self.index}.log"


def trace_is_current(path: str | Path, run: dict, engine_source: str) -> bool:
    """Whether the trace at `path` exists, is complete, and was written for `run` by this engine source."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            attrs = handle.attrs
            written_by = json.loads(attrs["versions_json"]).get("engine_source")
            return attrs["config_hash"] == config_hash(run) and written_by == engine_source and "step" in handle
    except (OSError, KeyError, ValueError):
        return False


def all_packs(config: dict, keys: list[RunKey]) -> list[Pack]:
    """Every pack of the grid, trained or not: the runs of a study at one batch size (every strategy and
    every trial of `tuned`), in the order seed, strategy, trial, chunked by `pack.max_runs`."""
    groups: dict[tuple[str, int], list[RunKey]] = {}
    for key in keys:
        groups.setdefault((key.study, key.batch_size), []).append(key)
    packs = []
    for (study, batch_size), members in groups.items():
        members = sorted(members, key=lambda k: (k.seed, k.strategy, -1 if k.trial is None else k.trial))
        size = config["studies"][study]["pack"]["max_runs"]
        for index in range(0, len(members), size):
            packs.append(Pack(study, batch_size, index // size, tuple(members[index:index + size])))
    return packs


def plan_packs(config: dict, keys: list[RunKey], engine_source: str, root: str | Path = ".") -> list[Pack]:
    """The packs with at least one run to train (only those runs), in grid order."""
    packs = []
    for pack in all_packs(config, keys):
        todo = tuple(k for k in pack.keys
                     if not trace_is_current(Path(root) / k.trace_path, run_config(config, k), engine_source))
        if todo:
            packs.append(Pack(pack.study, pack.batch_size, pack.index, todo))
    return packs


def pack_runs_json(config: dict, pack: Pack) -> str:
    return json.dumps([run_config(config, key) for key in pack.keys], sort_keys=True)


def pack_mem_mb(config: dict, pack: Pack) -> int:
    """Host memory of a pack's job: a base for the interpreter and data, plus a share per run."""
    settings = config["studies"][pack.study]["pack"]
    return int(settings["mem_mb_base"] + settings["mem_mb_per_run"] * len(pack.keys))


def pack_runtime_min(config: dict, pack: Pack) -> int:
    """Wall-time limit (minutes) of a pack's job: a base plus a share per run, so a pack of 16 asks for more
    time than a pack of 2 (a scheduler kills a job at its limit; the checkpoint makes the retry resume)."""
    settings = config["studies"][pack.study]["pack"]
    return int(settings["runtime_min_base"] + settings["runtime_min_per_run"] * len(pack.keys))
