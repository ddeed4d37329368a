"""The packed training step's loss: F.cross_entropy against the written-out form the engine uses.

Under torch.func.vmap, F.cross_entropy's nll_loss runs through a Python decomposition; the engine's
`cross_entropy_sum` (log_softmax, gather, sum) does not. This times one vmapped gradient step of a pack of
MLPs (the default config's digits_mlp shape: 64-128-10) with each loss, alternating, in this process, and
prints the ratio and whether the gradients agree bit for bit.

    PYTHONPATH=src python benchmarks/bench_cross_entropy.py [runs_in_pack] [batch_size]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from batchscale.engine.tasks import cross_entropy_sum


def library_loss(logits, y):
    return F.cross_entropy(logits, y, reduction="sum")


def packed_gradient(loss):
    def mlp_loss(params, x, y):
        hidden = torch.relu(x @ params[0].T + params[1])
        return loss(hidden @ params[2].T + params[3], y)
    return vmap(grad(mlp_loss))


def seconds_per_step(step, inputs, repeats: int = 200) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        step(*inputs)
    return (time.perf_counter() - started) / repeats


def main(runs: int = 15, batch_size: int = 32) -> None:
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    params = (0.1 * torch.randn(runs, 128, 64, generator=generator), torch.zeros(runs, 128),
              0.1 * torch.randn(runs, 10, 128, generator=generator), torch.zeros(runs, 10))
    inputs = (params, torch.randn(runs, batch_size, 64, generator=generator),
              torch.randint(10, (runs, batch_size), generator=generator))
    library, written = packed_gradient(library_loss), packed_gradient(cross_entropy_sum)
    identical = all(torch.equal(a, b) for a, b in zip(library(*inputs), written(*inputs)))
    ratios, library_times, written_times = [], [], []
    for _ in range(7):  # alternate, so a drift of the shared machine hits both alike
        library_times.append(seconds_per_step(library, inputs))
        written_times.append(seconds_per_step(written, inputs))
        ratios.append(library_times[-1] / written_times[-1])
    print(f"pack of {runs} MLPs, batch {batch_size}, 1 thread, 7 alternating rounds of 200 steps")
    print(f"F.cross_entropy:   median {1e3 * statistics.median(library_times):.3f} ms/step")
    print(f"cross_entropy_sum: median {1e3 * statistics.median(written_times):.3f} ms/step")
    print(f"ratio F.cross_entropy / cross_entropy_sum: median {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")
    print(f"gradients bit for bit identical: {identical}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
