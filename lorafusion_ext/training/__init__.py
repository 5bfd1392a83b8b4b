"""Training: the shared loop (seeded, resumable, progress bars, W&B), HWA-LoRA, pool and
LoRAFusion recipes, and per-task state swapping."""

from lorafusion_ext.training.loop import TrainConfig, TrainResult, evaluate, predict, train
from lorafusion_ext.training.methods import (
    FusionConfig,
    HWALoRAConfig,
    analog_classifier,
    analog_model,
    load_task_state,
    pool_from_models,
    task_state,
    train_fusion,
    train_hwa_lora,
)

__all__ = [
    "FusionConfig", "HWALoRAConfig", "TrainConfig", "TrainResult", "analog_classifier", "analog_model", "evaluate",
    "load_task_state", "pool_from_models", "predict", "task_state", "train", "train_fusion", "train_hwa_lora",
]
