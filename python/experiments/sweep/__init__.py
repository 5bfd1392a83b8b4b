"""The budget sweep of `python/experiments/budget_sweep.py`: `protocol` (settings, budgets,
cells, the shared options), `methods` (how one cell trains and is evaluated), `report` (JSON,
page, plot), `driver` (the main loop), `imports` (cells of another experiment taken from
the sweep's). `on_device.py` and `training_noise.py` reuse all but the report."""
