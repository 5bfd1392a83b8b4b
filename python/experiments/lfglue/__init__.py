"""The LoRAFusion GLUE experiment's protocol, training, report and pool export, in the modules of
this package; `python/experiments/lorafusion_glue.py` runs it."""
