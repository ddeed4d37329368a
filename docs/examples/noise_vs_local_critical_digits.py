"""B_simple (two-batch and exact) beside the local critical batch from branching, along one digits MLP run.

Not a test and not a benchmark: a measurement for docs/noise_scale.md, on the default config's digits_mlp
study (MLP 64-128-10, base batch 4, eta0 0.01, momentum 0.9), with the prototype `batchscale.branching_run`
standing in for the engine. Run from the repository root:

    PYTHONPATH=src python docs/examples/noise_vs_local_critical_digits.py
"""

import torch

from batchscale import noise
from batchscale import branching_run as brun
from batchscale.analysis import branching as br

torch.set_num_threads(1)
RUN = {"dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {"hidden": [128]}}, "seed": 0,
       "device": "cpu", "evaluation": {"train_subset": 1437, "batch_size": 1437},
       "optimizer": {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0}}
BASE_BATCH, LR, EPOCHS = 4, 0.01, 20
KS, DELTA, RULE, TOLERANCE = [1, 2, 4, 8, 16, 32, 64], 8192, "linear", 0.01
SMALL, BIG, DRAWS = 16, 256, 50


def main():
    setup = brun.setup_from_run(RUN)
    total = EPOCHS * (setup.train_x.shape[0] // BASE_BATCH)
    steps = br.checkpoint_steps(total, 5)
    saved = brun.train_base(setup, BASE_BATCH, LR, total, steps, seed=0)
    x = setup.prepare(setup.eval_x, False)
    rows = []
    print("examples  B_simple_exact  B_simple_two_batch(50 draws)  local_critical_batch")
    for index, step in enumerate(steps):
        model = setup.make_model()
        model.load_state_dict(saved[step]["model"])
        model.eval()
        loss_fn, params = noise.functional_loss(model, lambda out, y: setup.loss_sum(out, y) / setup.target_count(y))
        exact = noise.exact_noise(loss_fn, params, x, setup.eval_y)
        two = noise.two_batch_noise(loss_fn, params, x, setup.eval_y, SMALL, BIG,
                                    torch.Generator().manual_seed(index), draws=DRAWS)
        branch_rows = brun.branch_checkpoint(setup, saved[step], KS, DELTA, RULE, seed=0, checkpoint_index=index)
        table = br.local_critical_table(brun.branch_table(branch_rows), TOLERANCE)
        rows.append(table)
        print(f"{saved[step]['examples_seen']:8d}  {exact.trace_sigma / exact.g2:14.1f}  "
              f"{two.trace_sigma / two.g2:28.1f}  {table.iloc[0]['bracket_text']}")


if __name__ == "__main__":
    main()
