"""The budget sweep of `python/experiments/budget_sweep.py`: `protocol` (settings, budgets,
cells), `methods` (how one cell trains and is evaluated), `report` (JSON, page, plot)."""
