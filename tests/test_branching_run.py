"""The branching prototype: branches against gradient descent by hand, and the tiny DAG end to end."""

import numpy as np
import pytest
import torch

from batchscale import branching_run as brun
from batchscale.analysis import branching as br

torch.set_num_threads(1)

N, D = 256, 5


class PlainSGD:
    """w <- w - lr g, no momentum: the update the test recomputes with numpy."""

    def __init__(self, model):
        self.params = list(model.parameters())

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr):
        for p in self.params:
            p.sub_(lr * p.grad)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def least_squares_setup(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D))
    y = x @ rng.normal(size=D) + 0.5 * rng.normal(size=N)
    xt, yt = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)

    def make_model():
        return torch.nn.Sequential(torch.nn.Linear(D, 1, bias=False), torch.nn.Flatten(0)).double()

    setup = brun.BranchSetup(make_model=make_model, make_optimizer=PlainSGD, train_x=xt, train_y=yt, eval_x=xt,
                             eval_y=yt, loss_sum=lambda out, t: 0.5 * ((out - t) ** 2).sum(),
                             target_count=lambda t: t.shape[0])
    return setup, x, y


def test_branch_steps_examples_and_evaluation_points():
    setup, _, _ = least_squares_setup()
    checkpoint = brun.train_base(setup, 8, 0.05, 4, [4], seed=0)[4]
    assert (checkpoint["step"], checkpoint["examples_seen"], checkpoint["lr"]) == (4, 32, 0.05)
    result = brun.train_branch(setup, checkpoint, 32, 0.05, 256, seed=1, evaluations=5)
    assert (result["steps"], result["examples"]) == (8, 256)
    assert result["eval_steps"] == [4, 5, 6, 7, 8] and result["eval_examples"][-1] == 256
    assert len(result["losses"]) == 5
    assert brun.branch_evaluation_steps(1, 5) == [1]


def test_full_batch_branch_is_gradient_descent_by_hand():
    setup, x, y = least_squares_setup()
    checkpoint = brun.train_base(setup, 16, 0.05, 3, [3], seed=0)[3]
    w = checkpoint["model"]["0.weight"].numpy().ravel().copy()
    lr = 0.1
    result = brun.train_branch(setup, checkpoint, N, lr, 3 * N, seed=7, evaluations=3)
    expected = []
    for _ in range(3):  # a batch of all N examples is the full gradient, whatever the data order
        w = w - lr * x.T @ (x @ w - y) / N
        expected.append(0.5 * np.mean((x @ w - y) ** 2))
    assert result["eval_steps"] == [2, 3]  # the last half of three steps
    np.testing.assert_allclose(result["losses"], expected[1:], rtol=1e-10)


def test_zero_learning_rate_branches_all_match_the_checkpoint():
    setup, x, y = least_squares_setup()
    checkpoint = brun.train_base(setup, 8, 0.05, 5, [5], seed=0)[5]
    w = checkpoint["model"]["0.weight"].numpy().ravel()
    loss_at_checkpoint = 0.5 * np.mean((x @ w - y) ** 2)
    checkpoint = {**checkpoint, "lr": 0.0}
    rows = brun.branch_checkpoint(setup, checkpoint, [1, 2, 4], 64, "linear", seed=0)
    for row in rows:
        np.testing.assert_allclose(row["losses"], loss_at_checkpoint, rtol=1e-12)
    table = br.local_critical_table(brun.branch_table(rows), tolerance=1e-9)
    assert table.iloc[0][["local_critical_batch", "bracket"]].tolist() == [32.0, "at_least"]


def test_tiny_branching_dag_has_a_bracket_per_checkpoint(tmp_path):
    setup, _, _ = least_squares_setup()
    steps = br.checkpoint_steps(40, 3)
    assert steps == [1, 6, 40]
    saved = brun.train_base(setup, 4, 0.02, 40, steps, seed=0)
    rows = []
    for index, step in enumerate(steps):
        path = tmp_path / f"step{step}.pt"
        brun.save_checkpoint(saved[step], path)
        checkpoint = brun.load_checkpoint(path)
        assert torch.equal(checkpoint["model"]["0.weight"], saved[step]["model"]["0.weight"])
        rows += brun.branch_checkpoint(setup, checkpoint, [1, 2, 4, 8], 128, "sqrt", seed=0, evaluations=3,
                                       checkpoint_index=index)
    branches = brun.branch_table(rows, {"kind": "last_mean", "points": 2})
    assert sorted(branches["lr"].unique()) == pytest.approx([0.02, 0.02 * 2 ** 0.5, 0.04, 0.02 * 8 ** 0.5])
    assert set(branches["examples"]) == {128}
    table = br.local_critical_table(branches, tolerance=0.02)
    assert table["checkpoint_examples"].tolist() == [4, 24, 160]
    assert set(table["bracket"]) <= {"interval", "at_least", "below"}  # a bracket per checkpoint
    assert set(table["local_critical_batch"]) <= {4.0, 8.0, 16.0, 32.0}


def test_adapter_over_the_current_engine():
    run = {"dataset": {"name": "least_squares", "options": {"n_train": 256, "n_test": 64}}, "model": {"name": "linear"},
           "seed": 0, "device": "cpu", "evaluation": {"train_subset": 128, "batch_size": 64},
           "optimizer": {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0}}
    setup = brun.setup_from_run(run)
    assert setup.eval_x.shape[0] == 128 and setup.train_x.shape[0] == 256
    checkpoint = brun.train_base(setup, 8, 0.01, 6, [6], seed=0)[6]
    assert checkpoint["optimizer"]["buffers"] is not None  # momentum is carried into the branches
    before = brun.eval_loss(setup, _loaded(setup, checkpoint))
    result = brun.train_branch(setup, checkpoint, 16, 0.01, 160, seed=3, evaluations=2)
    assert result["steps"] == 10 and np.isfinite(result["losses"]).all()
    assert result["losses"][-1] < before  # ten more steps at a small rate lower the loss


def _loaded(setup, checkpoint):
    model = setup.make_model()
    model.load_state_dict(checkpoint["model"])
    return model
