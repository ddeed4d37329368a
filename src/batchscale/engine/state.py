"""What one run of a pack is and where it stands: its schedule, its random streams, its trace so far."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from batchscale.engine.grid import evaluation_steps
from batchscale.spec.schedule import learning_rate

POINT_FIELDS = ("step", "epoch", "examples_seen", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
                "wall_time")
APPROX_FIELDS = ("linear_approx_error", "linear_approx_error_rel")
# a run's own random streams, seeded from its seed (the offsets keep them apart)
AUGMENT_SEED_OFFSET = 7919
APPROX_SEED_OFFSET = 15485863


@dataclass
class RunState:
    """One run of a pack: its config, its length and evaluation points, its status, trace and random streams."""

    run: dict
    steps_per_epoch: int
    steps_total: int
    warmup_steps: int
    eval_points: list[int]
    status: str = "training"  # then "completed" or "diverged"
    initial_loss: float | None = None
    points: dict[str, list] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    augment_generator: torch.Generator | None = None
    approx_generator: torch.Generator | None = None

    @classmethod
    def create(cls, run: dict, num_train: int, device: torch.device) -> "RunState":
        """A run at step 0, its length from the training split's size and its streams seeded from its seed."""
        m = run["batch_size"]
        steps_per_epoch = num_train // m
        steps_total = steps_per_epoch * run["epochs"]
        if run.get("max_steps"):
            steps_total = min(steps_total, run["max_steps"])
        state = cls(run=run, steps_per_epoch=steps_per_epoch, steps_total=steps_total,
                    # a warm-up given in steps (spec.runs: warmup_steps) or in epochs
                    warmup_steps=int(run["warmup_steps"]) if "warmup_steps" in run
                    else int(round(run["warmup_epochs"] * steps_per_epoch)),
                    eval_points=evaluation_steps(run["evaluation"]["points_per_decade"], steps_total),
                    points={name: [] for name in POINT_FIELDS})
        state.augment_generator = torch.Generator(device=device).manual_seed(run["seed"] + AUGMENT_SEED_OFFSET)
        state.approx_generator = torch.Generator().manual_seed(run["seed"] + APPROX_SEED_OFFSET)
        return state

    def lr(self, step: int) -> float:
        """Rate of update `step` (0-based)."""
        run = self.run
        return learning_rate(step, eta0=run["eta0"], lr_peak=run["lr_peak"], warmup_steps=self.warmup_steps,
                             schedule=run["schedule"], total_steps=self.steps_total)

    def is_training(self) -> bool:
        """Neither completed nor diverged yet."""
        return self.status == "training"

    def to_checkpoint(self) -> dict:
        """Plain containers and tensors only (loadable with weights_only=True)."""
        return {"status": self.status, "initial_loss": self.initial_loss, "points": self.points,
                "scalars": self.scalars, "augment_generator": self.augment_generator.get_state(),
                "approx_generator": self.approx_generator.get_state()}

    def load_checkpoint(self, saved: dict) -> None:
        """Continue from what `to_checkpoint` saved."""
        self.status, self.initial_loss = saved["status"], saved["initial_loss"]
        self.points, self.scalars = saved["points"], saved["scalars"]
        # RNG states must be CPU byte tensors, whatever map_location did to them
        self.augment_generator.set_state(saved["augment_generator"].cpu())
        self.approx_generator.set_state(saved["approx_generator"].cpu())
