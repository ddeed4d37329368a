"""Progress of a workflow run on the console: packs done and running, runs done of the total, an ETA.

Snakemake prints only "N of M steps". While it runs, a monitor thread in the Snakemake process (started by
the Snakefile's `onstart`) prints one line every `interval` seconds, read from what the jobs leave on disk:
a pack is done when all its traces exist, running when its log has been written since the run started
(its progress bar, `steps done/total`, is the last `N/M` in the log). The ETA divides the training work still
to do by the rate of work done so far, work being a pack's steps times its runs. At the end, `summary_headline`
gives the first section of the summary to print.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROGRESS_BAR = re.compile(rb"(\d+)/(\d+) \[")  # tqdm's "  45%|####   | 900/2000 [00:10<00:12, ...]"


@dataclass(frozen=True)
class PackWork:
    """What the monitor knows of a pack: its job name, log, traces and work (steps x runs)."""

    name: str
    log: str
    outputs: tuple[str, ...]
    work: float


def pack_work(config: dict, pack, epochs: int | None = None) -> PackWork:
    """The monitor's view of a jobs.packs.Pack (or a prediction pack, trained for its own `epochs`): its steps
    (the longest run's) times its runs."""
    study = config["studies"][pack.study]
    steps = (study["data_sizes"]["train"] // pack.batch_size) * (epochs or study["epochs"])
    if study["max_steps"]:
        steps = min(steps, study["max_steps"])
    return PackWork(pack.name, pack.log, tuple(pack.outputs), float(max(steps, 1) * len(pack.keys)))


def _fraction_done(log: Path) -> float:
    try:
        tail = log.read_bytes()[-4096:]
    except OSError:
        return 0.0
    found = PROGRESS_BAR.findall(tail)
    return int(found[-1][0]) / max(int(found[-1][1]), 1) if found else 0.0


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def progress_line(packs: list[PackWork], started: float, done_before: set[str], now: float | None = None) -> str:
    """One line: packs done and running (with their progress), runs done of the total, the ETA."""
    now = time.time() if now is None else now
    done, running, work_done, work_total = [], [], 0.0, 0.0
    runs_done = runs_total = 0
    for pack in packs:
        if pack.name in done_before:
            continue  # trained before this run started: neither work to do nor work done now
        work_total += pack.work
        runs_total += len(pack.outputs)
        if all(Path(path).exists() for path in pack.outputs):
            done.append(pack)
            work_done += pack.work
            runs_done += len(pack.outputs)
        elif Path(pack.log).exists() and Path(pack.log).stat().st_mtime >= started:
            fraction = _fraction_done(Path(pack.log))
            running.append(f"{pack.name.removeprefix('train_')} {fraction:.0%}")
            work_done += fraction * pack.work
    elapsed = now - started
    eta = "ETA unknown" if work_done <= 0 else f"ETA {_minutes(elapsed * (work_total - work_done) / work_done)}"
    shown = ", ".join(running[:3]) + (f" and {len(running) - 3} more" if len(running) > 3 else "")
    return (f"batchscale: {len(done)}/{len(packs) - len(done_before)} training jobs done, {runs_done}/{runs_total} "
            f"runs, {_minutes(elapsed)} elapsed, {eta}" + (f"; running: {shown}" if shown else ""))


class ProgressMonitor(threading.Thread):
    """Prints progress_line every `interval` seconds until stopped (a daemon: it never holds Snakemake up)."""

    def __init__(self, packs: list[PackWork], interval: float = 30.0, stream=sys.stderr):
        super().__init__(daemon=True, name="batchscale-progress")
        self.packs, self.interval, self.stream = packs, interval, stream
        self.started = time.time()
        self.done_before = {p.name for p in packs if all(Path(path).exists() for path in p.outputs)}
        self._stop = threading.Event()

    def run(self) -> None:
        if len(self.done_before) == len(self.packs):
            return  # nothing to train: Snakemake's own lines say enough
        while not self._stop.wait(self.interval):
            line = progress_line(self.packs, self.started, self.done_before)
            print(line, file=self.stream, flush=True)
            if all(Path(path).exists() for pack in self.packs for path in pack.outputs):
                return  # training is over; Snakemake's lines follow the analysis

    def stop(self) -> None:
        self._stop.set()


def summary_headline(path: str | Path, max_lines: int = 25) -> str:
    """The summary's title and its first section with text (up to the next heading), for the console."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return ""
    headings = [i for i, line in enumerate(lines) if line.startswith("#")] + [len(lines)]
    shown = lines[:1]
    for start, end in zip(headings, headings[1:]):
        body = [line for line in lines[start + 1:end] if line.strip()]
        if body and start > 0 or (body and len(headings) == 2):
            shown += [lines[start]] + lines[start + 1:end]
            break
    return "\n".join(shown[:max_lines] + [f"(the whole summary: {path})"])
