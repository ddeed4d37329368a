"""Which runs train together: the packs of a grid, a pure function of the config.

A pack is the runs of one study at one batch size and one strategy (with `pack.strategies: together`, all
its fixed strategies) whose seeds fall in one block (`seed // pack.seeds_per_pack`) and, for `tuned`, whose
trials fall in one block (`trial // pack.trials_per_pack`, round 2 apart from round 1). Nothing on disk decides it, so a run is always trained
with the same companions, and its trace has the same bytes whatever was trained before:
- adding a seed, a batch size, a strategy or trials creates new packs, or changes only the packs the new
  runs join (a seed or trial landing in an existing block);
- a deleted or damaged trace retrains its whole pack, which gives the bytes of a run from scratch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from batchscale.spec.manifest import ROUND1_PATH
from batchscale.spec.runs import is_refinement, iter_runs, run_config, RunKey
from batchscale.spec.strategies import TUNED


@dataclass(frozen=True)
class Pack:
    study: str
    batch_size: int
    strategy: str
    seed_block: int
    trial_block: int | None  # None for the fixed strategies
    refinement: bool  # round-2 trials of `tuned`: they wait for round 1's result
    keys: tuple[RunKey, ...]

    @property
    def part(self) -> str:
        """The pack's name within its study and batch size: blr_s0, tuned_s0_t1, tuned_s0_t0_r2."""
        part = f"{self.strategy}_s{self.seed_block}"
        if self.trial_block is not None:
            part += f"_t{self.trial_block}"
        return part + ("_r2" if self.refinement else "")

    @property
    def name(self) -> str:
        """The Snakemake rule that trains it (`snakemake --forcerun <name>`)."""
        return re.sub(r"\W", "_", f"train_{self.study}_bs{self.batch_size}_{self.part}")

    @property
    def checkpoint(self) -> str:
        return f"results/{self.study}/checkpoints/bs{self.batch_size}/{self.part}.pt"

    @property
    def log(self) -> str:
        return f"logs/{self.study}/train/bs{self.batch_size}/{self.part}.log"

    @property
    def inputs(self) -> list[str]:
        """What the job reads besides the data: round 1's best trials, for a round-2 pack."""
        return [ROUND1_PATH.format(study=self.study)] if self.refinement else []

    @property
    def outputs(self) -> list[str]:
        return [key.trace_path for key in self.keys]


def pack_group(config: dict, key: RunKey) -> tuple:
    """The pack a run belongs to, from the config alone: (study, batch size, strategy, seed block, trial
    block, round 2)."""
    study = config["studies"][key.study]
    settings = study["pack"]
    refinement = is_refinement(config, key)
    strategy = key.strategy
    if settings["strategies"] == "together" and strategy != TUNED:
        strategy = "_".join(s for s in study["strategies"] if s != TUNED)
    trial_block = None
    if key.trial is not None:
        first = len(config["studies"][key.study]["tuning"]["trial_points"]) if refinement else 0
        trial_block = (key.trial - first) // settings["trials_per_pack"]
    return (key.study, key.batch_size, strategy, key.seed // settings["seeds_per_pack"], trial_block, refinement)


def all_packs(config: dict) -> list[Pack]:
    """Every pack of the grid, in grid order (study, batch size, strategy, blocks); each pack's runs in the
    order seed, trial."""
    groups: dict[tuple, list[RunKey]] = {}
    for key in iter_runs(config):
        groups.setdefault(pack_group(config, key), []).append(key)
    packs = []
    for group, members in groups.items():
        rank = {name: i for i, name in enumerate(config["studies"][group[0]]["strategies"])}
        members.sort(key=lambda k: (k.seed, rank[k.strategy], -1 if k.trial is None else k.trial))
        packs.append(Pack(*group, keys=tuple(members)))
    order = {name: i for i, name in enumerate(config["studies"])}
    return sorted(packs, key=lambda p: (order[p.study], p.batch_size, p.strategy != TUNED, p.strategy,
                                        p.refinement, p.seed_block, p.trial_block or 0))


def pack_runs_json(config: dict, pack: Pack) -> str:
    """The pack's run configs as compact JSON: {"shared": keys equal in every run, "runs": the rest per run}
    (a tuned pack of 40 runs is about 10 kB this way, well under a command-line argument's limit)."""
    runs = [run_config(config, key) for key in pack.keys]
    shared = {name: value for name, value in runs[0].items() if all(run.get(name, ...) == value for run in runs)}
    own = [{name: value for name, value in run.items() if name not in shared} for run in runs]
    return json.dumps({"shared": shared, "runs": own}, sort_keys=True, separators=(",", ":"))


def runs_from_json(text: str) -> list[dict]:
    """The run configs of pack_runs_json (or a plain list of run configs)."""
    loaded = json.loads(text)
    if isinstance(loaded, list):
        return loaded
    return [{**loaded["shared"], **own} for own in loaded["runs"]]


def pack_threads(config: dict, pack: Pack) -> int:
    """CPU threads of a pack's job, from the config alone, so that `--cores` never changes a trace: one
    below `train_threads.single_thread_below` (thread start-up costs more than small batches save), else
    `train_threads.max`. The job uses this many even when Snakemake grants fewer cores."""
    settings = config["train_threads"]
    return 1 if pack.batch_size < settings["single_thread_below"] else int(settings["max"])


def pack_mem_mb(config: dict, pack: Pack) -> int:
    """Host memory of a pack's job: a base for the interpreter and data, plus a share per run."""
    settings = config["studies"][pack.study]["pack"]
    return int(settings["mem_mb_base"] + settings["mem_mb_per_run"] * len(pack.keys))


def pack_runtime_min(config: dict, pack: Pack) -> int:
    """Wall-time limit (minutes) of a pack's job: a base plus a share per run, so a pack of 16 asks for more
    time than a pack of 2 (a scheduler kills a job at its limit; the checkpoint makes the retry resume)."""
    settings = config["studies"][pack.study]["pack"]
    return int(settings["runtime_min_base"] + settings["runtime_min_per_run"] * len(pack.keys))
