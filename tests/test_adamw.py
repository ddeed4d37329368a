"""PackedAdamW against torch.optim.AdamW on a small MLP's real gradients, the active mask, and resume.

Each packed run is compared with its own torch.optim.AdamW over an nn.Module copy of its weights, fed the
same batches and the same per-step learning rate: any mix-up of runs, hyperparameters, bias corrections or
weight decay shows up as a difference far above 1e-12.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.func import functional_call, grad, vmap

from batchscale.engine.adamw import PackedAdamW

IN, HIDDEN, OUT, BATCH = 6, 8, 3, 16
STEPS = 100  # every test draws its batches from the same 100 steps
# Four runs with different hyperparameters; lr is the peak of a warm-up then decay, so it changes every step.
RUNS = {"lr": [1e-2, 3e-3, 2e-2, 5e-3], "beta1": [0.9, 0.8, 0.95, 0.0], "beta2": [0.999, 0.99, 0.9, 0.98],
        "eps": [1e-8, 1e-6, 1e-3, 1e-10], "weight_decay": [0.0, 0.01, 0.1, 0.5]}


def mlp() -> torch.nn.Module:
    # tanh, not ReLU: no exactly-zero gradients whose second moment would sit at eps
    return torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, OUT))


def lr_at(step: int, peak: float) -> float:
    return peak * min(1.0, (step + 1) / 10) * (1 - step / 200)


def batches(runs: int, seed: int = 0):
    """A different random batch per run and step: inputs (STEPS, R, BATCH, IN), labels (STEPS, R, BATCH)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(STEPS, runs, BATCH, IN, generator=generator, dtype=torch.float64)
    y = torch.randint(0, OUT, (STEPS, runs, BATCH), generator=generator)
    return x, y


def run_modules(runs: int, seed: int = 0) -> list[torch.nn.Module]:
    modules = []
    for r in range(runs):
        torch.manual_seed(seed * 100 + r)
        modules.append(mlp().double())
    return modules


def stacked(modules) -> dict[str, torch.Tensor]:
    return {name: torch.stack([dict(m.named_parameters())[name].detach() for m in modules]).clone()
            for name, _ in modules[0].named_parameters()}


def packed_grads(template: torch.nn.Module, params: dict, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    def loss(p, xb, yb):
        return torch.nn.functional.cross_entropy(functional_call(template, p, (xb,)), yb)
    grads = vmap(grad(loss))(params, x, y)
    return [grads[name] for name in params]


def hyper(runs: int, key: str) -> list[float]:
    return RUNS[key][:runs]


def packed_optimizer(params: dict, runs: int) -> PackedAdamW:
    return PackedAdamW(list(params.values()), beta1=hyper(runs, "beta1"), beta2=hyper(runs, "beta2"),
                       eps=hyper(runs, "eps"), weight_decay=hyper(runs, "weight_decay"))


def train_steps(optimizer: PackedAdamW, params: dict, span, runs: int) -> None:
    """Steps `span` of every run, each on its own batches at its own rate."""
    template = mlp().double()
    x, y = batches(runs)
    for step in span:
        lr = torch.tensor([lr_at(step, peak) for peak in hyper(runs, "lr")], dtype=torch.float64)
        optimizer.step(packed_grads(template, params, x[step], y[step]), lr, torch.ones(runs, dtype=torch.bool))


def train_packed(runs: int, steps: int):
    params = stacked(run_modules(runs))
    optimizer = packed_optimizer(params, runs)
    train_steps(optimizer, params, range(steps), runs)
    return params, optimizer


def train_reference(run: int, runs: int, steps: list[int]):
    """torch.optim.AdamW on run `run` alone, stepping at the listed steps (with their batches and rates)."""
    module = run_modules(runs)[run]
    optimizer = torch.optim.AdamW(module.parameters(), lr=0.0, betas=(RUNS["beta1"][run], RUNS["beta2"][run]),
                                  eps=RUNS["eps"][run], weight_decay=RUNS["weight_decay"][run])
    x, y = batches(runs)
    for step in steps:
        optimizer.param_groups[0]["lr"] = lr_at(step, RUNS["lr"][run])
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(x[step, run]), y[step, run]).backward()
        optimizer.step()
    return module, optimizer


def max_difference(packed: dict, run: int, module: torch.nn.Module) -> float:
    return max(float((packed[name][run] - p.detach()).abs().max()) for name, p in module.named_parameters())


@pytest.mark.parametrize("runs", [1, 4])
def test_matches_torch_adamw_over_100_steps(runs):
    params, optimizer = train_packed(runs, 100)
    for run in range(runs):
        module, reference = train_reference(run, runs, list(range(100)))
        # the weights moved far from their start, so agreement is not agreement of untouched weights
        start = run_modules(runs)[run]
        moved = max(float((a - b).detach().abs().max()) for a, b in zip(module.parameters(), start.parameters()))
        assert moved > 0.05
        assert max_difference(params, run, module) < 1e-12
        for i, p in enumerate(module.parameters()):
            state = reference.state[p]
            assert float((optimizer.exp_avg[i][run] - state["exp_avg"]).abs().max()) < 1e-12
            assert float((optimizer.exp_avg_sq[i][run] - state["exp_avg_sq"]).abs().max()) < 1e-12
    assert optimizer.steps.tolist() == [100] * runs


def test_inactive_run_is_not_updated_and_resumes_where_it_stopped():
    """Run 2 pauses for steps 10-19: it stays bit for bit, then continues like an AdamW that skipped them."""
    def active(step):
        return torch.tensor([True, True, not 10 <= step < 20, True])

    modules = run_modules(4)
    params = stacked(modules)
    optimizer = packed_optimizer(params, 4)
    x, y = batches(4)
    for step in range(40):
        lr = torch.tensor([lr_at(step, peak) for peak in RUNS["lr"]], dtype=torch.float64)
        grads = packed_grads(modules[0], params, x[step], y[step])
        if 10 <= step < 20:
            grads = [g.clone() for g in grads]
            for g in grads:
                g[2] = float("nan")  # a paused (say diverged) run's gradient must not leak into anything
        if step == 10:
            frozen = {"params": [p[2].clone() for p in params.values()],
                      "exp_avg": [m[2].clone() for m in optimizer.exp_avg],
                      "exp_avg_sq": [v[2].clone() for v in optimizer.exp_avg_sq]}
        optimizer.step(grads, lr, active(step))
        if 10 <= step < 20:
            assert all(torch.equal(p[2], f) for p, f in zip(params.values(), frozen["params"]))
            assert all(torch.equal(m[2], f) for m, f in zip(optimizer.exp_avg, frozen["exp_avg"]))
            assert all(torch.equal(v[2], f) for v, f in zip(optimizer.exp_avg_sq, frozen["exp_avg_sq"]))
    assert optimizer.steps.tolist() == [40, 40, 30, 40]
    skipped, _ = train_reference(2, 4, [s for s in range(40) if not 10 <= s < 20])
    assert max_difference(params, 2, skipped) < 1e-12
    for run in (0, 1, 3):
        module, _ = train_reference(run, 4, list(range(40)))
        assert max_difference(params, run, module) < 1e-12


def test_run_inactive_from_the_start_stays_at_zero_steps():
    params = [torch.ones(2, 3, dtype=torch.float64)]
    optimizer = PackedAdamW(params, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
    optimizer.step([torch.full((2, 3), 0.5, dtype=torch.float64)], torch.tensor([0.1, 0.1], dtype=torch.float64),
                   torch.tensor([True, False]))
    assert torch.equal(params[0][1], torch.ones(3, dtype=torch.float64))
    assert optimizer.steps.tolist() == [1, 0]
    # first AdamW step by hand: decay 1 - 0.1*0.1, then m_hat / (sqrt(v_hat) + eps) = 0.5 / (0.5 + 1e-8)
    expected = 1 * (1 - 0.01) - 0.1 * 0.5 / (0.5 + 1e-8)
    assert torch.allclose(params[0][0], torch.full((3,), expected, dtype=torch.float64), rtol=0, atol=1e-15)


def test_state_dict_round_trip_continues_bit_identically(tmp_path):
    uninterrupted, _ = train_packed(4, 100)

    params = stacked(run_modules(4))
    optimizer = packed_optimizer(params, 4)
    train_steps(optimizer, params, range(50), 4)
    torch.save({"params": params, "optimizer": optimizer.state_dict()}, tmp_path / "state.pt")
    train_steps(optimizer, params, range(50, 60), 4)  # the saved state must not follow later steps
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    resumed_params = saved["params"]
    resumed = packed_optimizer(resumed_params, 4)
    resumed.load_state_dict(saved["optimizer"])
    assert resumed.steps.tolist() == [50] * 4
    train_steps(resumed, resumed_params, range(50, 100), 4)
    for name in uninterrupted:
        assert torch.equal(resumed_params[name], uninterrupted[name])


def test_load_state_dict_refuses_other_hyperparameters():
    params = [torch.zeros(2, 3, dtype=torch.float64)]
    state = PackedAdamW(params, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0).state_dict()
    other = PackedAdamW(params, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0)
    with pytest.raises(ValueError, match="beta2"):
        other.load_state_dict(state)


def test_importing_and_stepping_does_not_load_dynamo():
    """torch.optim.AdamW's constructor imports torch._dynamo (about a second per train job); this must not."""
    code = ("import sys, torch\n"
            "from batchscale.engine.adamw import PackedAdamW\n"
            "p = [torch.zeros(2, 3)]\n"
            "PackedAdamW(p, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0).step([torch.ones(2, 3)], [0.1, 0.1], [True, True])\n"
            "assert float(p[0][0, 0]) < 0\n"
            "print('torch._dynamo' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def subprocess_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}


# --------------------------------------------------------------------------------------------------
# Resume after SIGKILL: a process trains 50 steps, checkpoints, and is killed; a new process loads the
# checkpoint and trains to step 100; a third trains 100 steps uninterrupted. The final weights must be equal
# bit for bit. All three are subprocesses on one thread, so none inherits the test process's settings.

def checkpointed_training(mode: str, checkpoint: Path, result: Path) -> None:
    torch.set_num_threads(1)
    params = stacked(run_modules(4))
    optimizer = packed_optimizer(params, 4)
    start = 0
    if mode == "resume":
        saved = torch.load(checkpoint, weights_only=True)
        params, start = saved["params"], saved["step"]
        optimizer = packed_optimizer(params, 4)
        optimizer.load_state_dict(saved["optimizer"])
    if mode == "killed":
        train_steps(optimizer, params, range(50), 4)
        partial = checkpoint.with_suffix(".partial")
        torch.save({"params": params, "optimizer": optimizer.state_dict(), "step": 50}, partial)
        os.replace(partial, checkpoint)
        os.kill(os.getpid(), signal.SIGKILL)
    train_steps(optimizer, params, range(start, 100), 4)
    torch.save(params, result)


def run_stage(mode: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, __file__, mode, str(tmp_path / "checkpoint.pt"),
                           str(tmp_path / f"{mode}.pt")], env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    killed = run_stage("killed", tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "killed.pt").exists()
    for mode in ("resume", "uninterrupted"):
        done = run_stage(mode, tmp_path)
        assert done.returncode == 0, done.stderr
    resumed = torch.load(tmp_path / "resume.pt", weights_only=True)
    uninterrupted = torch.load(tmp_path / "uninterrupted.pt", weights_only=True)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["params"]
    for name in uninterrupted:
        assert not torch.equal(saved[name], uninterrupted[name])  # steps 50-99 did change the weights
        assert torch.equal(resumed[name], uninterrupted[name])


if __name__ == "__main__":
    checkpointed_training(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
