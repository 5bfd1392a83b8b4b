"""lorafusion_ext: analog in-memory-computing crossbars for transformers, with HWA-LoRA and
LoRAFusion, as a C++/CUDA PyTorch extension."""

from lorafusion_ext._extension import build_info
from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext import devices, ops, nn

__all__ = ["HardwareConfig", "build_info", "devices", "nn", "ops"]
__version__ = "0.1.0"
