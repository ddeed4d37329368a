"""Extra wall time of the two-batch noise scale on a study of the default config.yaml (issue 14).

For each batch size of the study, trains the pack of one strategy's runs (every seed) as config.yaml resolves
them, with noise_scale off and on (on: teacher_2048's settings in config.yaml, two-batch only), one thread,
and prints both wall times and the extra, measured in this process. The last line extrapolates the extra to
every run of the study (the mean extra per run at each batch size, times the study's runs at that size,
tuned trials included: they train the same epochs at the same batch sizes).

    PYTHONPATH=src python benchmarks/bench_default_noise_cost.py teacher_2048 [strategy]
    PYTHONPATH=src python benchmarks/bench_default_noise_cost.py digits_mlp blr
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import torch

from batchscale.spec.reading import read_yaml
from batchscale.spec.runs import iter_runs, RunKey
from batchscale.validate import load_config
from batchscale.engine.pack import train_pack

ROOT = Path(__file__).resolve().parents[1]


def noise_settings(config: dict) -> dict:
    """The default run's two-batch settings (teacher_2048's block), so every study is measured alike."""
    return config["studies"]["teacher_2048"]["noise_scale"]


def pack_seconds(study: str, strategy: str, batch_size: int, noise: dict) -> tuple[float, int]:
    raw = read_yaml(ROOT / "config.yaml")
    raw["studies"][study]["noise_scale"] = noise
    config = load_config(raw)
    from batchscale.spec.runs import run_config

    seeds = config["studies"][study]["seeds"]
    runs = [run_config(config, RunKey(study, strategy, batch_size, seed)) for seed in seeds]
    began = time.perf_counter()
    train_pack(runs, progress=False)
    return time.perf_counter() - began, len(runs)


def main(study: str, strategy: str | None) -> None:
    torch.set_num_threads(1)
    config = load_config(read_yaml(ROOT / "config.yaml"))
    strategy = strategy or config["studies"][study]["strategies"][0]
    on = {**noise_settings(config), "enabled": True}
    runs_per_size = Counter(key.batch_size for key in iter_runs(config) if key.study == study)
    total_off = total_extra = 0.0
    for size in config["studies"][study]["batch_sizes"]:
        off, n = pack_seconds(study, strategy, size, {"enabled": False})
        with_noise, _ = pack_seconds(study, strategy, size, on)
        extra_per_run = (with_noise - off) / n
        total_off += off / n * runs_per_size[size]
        total_extra += extra_per_run * runs_per_size[size]
        print(f"{study} {strategy} m={size}: {n} runs, off {off:.2f} s, on {with_noise:.2f} s, "
              f"x{with_noise / off:.2f}, extra {extra_per_run:.3f} s per run")
    print(f"{study}: {sum(runs_per_size.values())} runs, one thread: training about {total_off:.0f} s, "
          f"noise scale adds about {total_extra:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
