"""Our written-out SGD makes the same updates as torch.optim.SGD."""

import pytest
import torch

from batchscale.engine.sgd import SGD


@pytest.mark.parametrize("momentum, nesterov, weight_decay", [
    (0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 0.0), (0.9, False, 5e-4), (0.5, True, 1e-2),
])
def test_matches_torch_optim_sgd(momentum, nesterov, weight_decay):
    torch.manual_seed(0)
    ours = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    theirs.load_state_dict(ours.state_dict())
    sgd = SGD(ours.parameters(), momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    reference = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=momentum, nesterov=nesterov,
                                weight_decay=weight_decay)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    for step in range(6):
        lr = 0.1 * (step + 1) / 3  # a changing rate, as under warm-up
        for group in reference.param_groups:
            group["lr"] = lr
        for net, opt in ((ours, sgd), (theirs, reference)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
        sgd.step(lr)
        reference.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_state_round_trip_continues_identically():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    sgd = SGD(net.parameters(), momentum=0.9)
    x = torch.randn(8, 4)
    for _ in range(2):
        sgd.zero_grad(); net(x).pow(2).sum().backward(); sgd.step(0.01)
    saved_net, saved_state = {k: v.clone() for k, v in net.state_dict().items()}, \
        {"buffers": [b.clone() for b in sgd.state_dict()["buffers"]]}
    sgd.zero_grad(); net(x).pow(2).sum().backward(); sgd.step(0.01)
    expected = [p.detach().clone() for p in net.parameters()]
    net.load_state_dict(saved_net)
    resumed = SGD(net.parameters(), momentum=0.9)
    resumed.load_state_dict(saved_state)
    resumed.zero_grad(); net(x).pow(2).sum().backward(); resumed.step(0.01)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), expected))
