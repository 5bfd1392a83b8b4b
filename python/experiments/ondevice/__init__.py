"""The on-device learning measurement of `python/experiments/on_device.py` (issue 27, item 6):
`protocol` (backward settings, settings, cells), `methods` (how one cell trains and is
evaluated), `report` (JSON, page, plot). The recipe, data, evaluation and argument parsing are
the budget sweep's (`sweep`)."""
