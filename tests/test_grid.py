"""The shared log-spaced evaluation grid."""

from batchscale.engine.grid import evaluation_steps, log_grid


def test_log_grid_four_per_decade():
    # round(10 ** (i / 4)) for i = 0..8: 1, 1.78, 3.16, 5.62, 10, 17.8, 31.6, 56.2, 100
    assert log_grid(4, 100) == [0, 1, 2, 3, 6, 10, 18, 32, 56, 100]


def test_log_grid_dedupes_small_steps():
    # ten per decade: 1, 1.26, 1.58, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 7.9, 10 -> rounding repeats 1 and 2
    assert log_grid(10, 10) == [0, 1, 2, 3, 4, 5, 6, 8, 10]


def test_evaluation_steps_add_the_final_step_and_share_the_grid():
    short, long = evaluation_steps(4, 40), evaluation_steps(4, 1000)
    assert short == [0, 1, 2, 3, 6, 10, 18, 32, 40]
    assert long[:8] == short[:8]  # runs of different length align on the shared points
    assert long[-1] == 1000 and 562 in long
