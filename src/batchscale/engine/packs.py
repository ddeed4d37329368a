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

from batchscale.config import ROUND1_PATH, RunKey, config_hash, is_refinement, resolve_run, run_config


@dataclass(frozen=True)
class Pack:
    study: str
    batch_size: int
    index: int
    keys: tuple[RunKey, ...]  # the runs this pack's job trains
    refinement: bool = False  # round-2 trials of `tuned`: packed apart, as they wait for round 1's result

    @property
    def _part(self) -> str:
        return f"r2pack{self.index}" if self.refinement else f"pack{self.index}"

    @property
    def name(self) -> str:
        part = f"r2p{self.index}" if self.refinement else f"p{self.index}"
        return re.sub(r"\W", "_", f"train_{self.study}_bs{self.batch_size}_{part}")

    @property
    def checkpoint(self) -> str:
        return f"results/{self.study}/checkpoints/bs{self.batch_size}/{self._part}.pt"

    @property
    def log(self) -> str:
        return f"logs/{self.study}/train/bs{self.batch_size}/{self._part}.log"

    @property
    def inputs(self) -> list[str]:
        """What the job reads besides the data: round 1's best trials, for a round-2 pack."""
        return [ROUND1_PATH.format(study=self.study)] if self.refinement else []


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
    groups: dict[tuple[str, int, bool], list[RunKey]] = {}
    for key in keys:
        groups.setdefault((key.study, key.batch_size, is_refinement(config, key)), []).append(key)
    packs = []
    for (study, batch_size, refinement), members in groups.items():
        members = sorted(members, key=lambda k: (k.seed, k.strategy, -1 if k.trial is None else k.trial))
        size = config["studies"][study]["pack"]["max_runs"]
        for index in range(0, len(members), size):
            packs.append(Pack(study, batch_size, index // size, tuple(members[index:index + size]), refinement))
    return packs


def _run_is_current(config: dict, key: RunKey, engine_source: str, root: Path) -> bool:
    """trace_is_current for the run's resolved config: a round-2 run is compared with the rate round 1's
    file gives it now (not current while that file is missing)."""
    try:
        run = resolve_run(run_config(config, key), root)
    except (OSError, ValueError, KeyError):
        return False
    return trace_is_current(root / key.trace_path, run, engine_source)


def plan_packs(config: dict, keys: list[RunKey], engine_source: str, root: str | Path = ".") -> list[Pack]:
    """The packs with at least one run to train (only those runs), in grid order. Round 2 of a study whose
    round 1 still trains any run trains again whole: its rates come from round 1's file, which that
    training rewrites (the best trial anywhere can move every batch size's, through tuned's threshold)."""
    root = Path(root)
    packs, retrained = [], set()
    every = all_packs(config, keys)
    for pack in sorted(every, key=lambda p: p.refinement):  # round 1 first: round 2 depends on it
        todo = tuple(k for k in pack.keys
                     if pack.study in retrained or not _run_is_current(config, k, engine_source, root))
        if todo:
            packs.append(Pack(pack.study, pack.batch_size, pack.index, todo, pack.refinement))
            if any(k.strategy == "tuned" for k in todo) and not pack.refinement:
                retrained.add(pack.study)
    order = {(p.study, p.batch_size, p.index, p.refinement): i for i, p in enumerate(every)}
    return sorted(packs, key=lambda p: order[(p.study, p.batch_size, p.index, p.refinement)])


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
