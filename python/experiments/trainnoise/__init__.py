"""The training-noise experiment of `python/experiments/training_noise.py` (issue 25): `protocol`
(rows, settings, cells, config), `methods` (how one cell trains and is evaluated, and the cells
imported from the budget sweep), `report` (JSON, page, plot). The recipe, data, evaluation,
argument parsing and main loop are the budget sweep's (`sweep`)."""
