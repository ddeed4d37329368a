"""The packed SGD makes, run by run, the updates torch.optim.SGD makes, and leaves inactive runs alone."""

import pytest
import torch

from batchscale.engine.optim import OPTIMIZERS, PackedSGD, build_optimizer

SETTINGS = [(0.0, 0.0), (0.9, 0.0), (0.9, 5e-4), (0.5, 1e-2)]  # (momentum, weight decay) of runs 0..3


def net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()


@pytest.mark.parametrize("nesterov", [False, True])
def test_each_run_matches_torch_optim_sgd_with_its_own_hyperparameters(nesterov):
    torch.manual_seed(0)
    nets = [net() for _ in SETTINGS]
    params = [torch.stack([p.detach().clone() for p in group]) for group in zip(*[n.parameters() for n in nets])]
    sgd = PackedSGD(params, momentum=torch.tensor([s[0] for s in SETTINGS], dtype=torch.float64),
                    weight_decay=torch.tensor([s[1] for s in SETTINGS], dtype=torch.float64), nesterov=nesterov)
    references = [torch.optim.SGD(n.parameters(), lr=0.1, momentum=m, nesterov=nesterov and m > 0, weight_decay=wd)
                  for n, (m, wd) in zip(nets, SETTINGS)]
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    for step in range(6):
        rates = [0.1 * (step + 1) / 3 * (r + 1) for r in range(len(SETTINGS))]  # changing, per run
        for n, reference, lr in zip(nets, references, rates):
            for group in reference.param_groups:
                group["lr"] = lr
            reference.zero_grad()
            torch.nn.functional.cross_entropy(n(x), y).backward()
        grads = [torch.stack([p.grad for p in group]) for group in zip(*[n.parameters() for n in nets])]
        # the gradient at the packed weights equals the reference's: the weights stay equal step by step
        sgd.step(grads, torch.tensor(rates, dtype=torch.float64), torch.ones(len(SETTINGS), dtype=torch.bool))
        for reference in references:
            reference.step()
    for r, n in enumerate(nets):
        for stacked, p in zip(params, n.parameters()):
            assert torch.allclose(stacked[r], p, rtol=1e-12, atol=1e-14)


def test_an_inactive_run_keeps_its_weights_and_state():
    params = [torch.randn(3, 4, dtype=torch.float64)]
    sgd = PackedSGD(params, momentum=torch.full((3,), 0.9, dtype=torch.float64),
                    weight_decay=torch.zeros(3, dtype=torch.float64))
    all_on = torch.ones(3, dtype=torch.bool)
    sgd.step([torch.ones(3, 4, dtype=torch.float64)], torch.full((3,), 0.1, dtype=torch.float64), all_on)
    before, buffers = params[0].clone(), sgd.state_dict()["buffers"][0].clone()
    active = torch.tensor([True, False, True])
    sgd.step([torch.full((3, 4), 2.0, dtype=torch.float64)], torch.full((3,), 0.1, dtype=torch.float64), active)
    assert torch.equal(params[0][1], before[1]) and torch.equal(sgd.buffers[0][1], buffers[1])
    # the active runs: buf = 0.9 * 1 + 2 = 2.9, w -= 0.1 * 2.9
    assert torch.allclose(params[0][0], before[0] - 0.29) and torch.allclose(sgd.buffers[0][2], torch.full((4,), 2.9,
                                                                                                     dtype=torch.float64))


def test_a_run_started_late_takes_its_gradient_as_first_buffer():
    params = [torch.zeros(2, 1)]
    sgd = PackedSGD(params, momentum=torch.full((2,), 0.5), weight_decay=torch.zeros(2))
    sgd.step([torch.ones(2, 1)], torch.ones(2), torch.tensor([True, False]))
    sgd.step([torch.ones(2, 1)], torch.ones(2), torch.tensor([True, True]))
    assert sgd.buffers[0].flatten().tolist() == [1.5, 1.0]


def test_state_round_trip_continues_identically_and_loads_with_weights_only(tmp_path):
    torch.manual_seed(0)
    params = [torch.randn(2, 3)]
    sgd = PackedSGD(params, momentum=torch.full((2,), 0.9), weight_decay=torch.full((2,), 1e-3))
    grads = [torch.randn(2, 3) for _ in range(3)]
    lr, on = torch.full((2,), 0.01), torch.ones(2, dtype=torch.bool)
    for g in grads[:2]:
        sgd.step([g], lr, on)
    torch.save({"params": params, "sgd": sgd.state_dict()}, tmp_path / "s.pt")
    sgd.step([grads[2]], lr, on)
    expected = params[0].clone()
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    resumed = PackedSGD(saved["params"], momentum=torch.full((2,), 0.9), weight_decay=torch.full((2,), 1e-3))
    resumed.load_state_dict(saved["sgd"])
    resumed.step([grads[2]], lr, on)
    assert torch.equal(saved["params"][0], expected)


def test_the_optimizer_comes_from_the_runs_config():
    runs = [{"optimizer": {"momentum": 0.9, "weight_decay": 0.0, "nesterov": False}},
            {"optimizer": {"name": "sgd", "momentum": 0.5, "weight_decay": 1e-4, "nesterov": False}}]
    sgd = build_optimizer(runs, [torch.zeros(2, 3)])
    assert isinstance(sgd, PackedSGD) and sgd.momentum.tolist() == pytest.approx([0.9, 0.5])
    assert set(OPTIMIZERS) >= {"sgd"}
    with pytest.raises(ValueError, match="nesterov"):
        build_optimizer([runs[0], {"optimizer": dict(runs[1]["optimizer"], nesterov=True)}], [torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="not known"):
        build_optimizer([{"optimizer": {"name": "lion"}}], [torch.zeros(1, 3)])
