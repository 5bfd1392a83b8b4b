"""The noise-levels measurement (`python/experiments/noise_levels.py`): how far the training read
and the deployed reads of the pretrained encoder are from the digital model."""
