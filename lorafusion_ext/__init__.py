"""lorafusion_ext: analog in-memory-computing crossbars for transformers, with HWA-LoRA and
LoRAFusion, as a C++/CUDA PyTorch extension."""

from lorafusion_ext._extension import build_info
from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext import devices, ops, nn
from lorafusion_ext.nn.deploy import analog_layers, drift, program, unprogram
from lorafusion_ext.evaluation import DriftSweepResult, drift_sweep

__all__ = [
    "DriftSweepResult",
    "HardwareConfig",
    "analog_layers",
    "build_info",
    "devices",
    "drift",
    "drift_sweep",
    "nn",
    "ops",
    "program",
    "unprogram",
]
__version__ = "0.1.0"
