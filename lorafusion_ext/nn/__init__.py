"""Modules: `AnalogLinear` (drop-in for nn.Linear), LoRA, LoRA pools and LoRAFusion layers."""

from lorafusion_ext.nn.analog_linear import AnalogLinear
from lorafusion_ext.nn.analog_pool import AnalogPoolLayer
from lorafusion_ext.nn.deploy import clip_after_steps, post_update_steps
from lorafusion_ext.nn.fusion import LoRAFusionLinear
from lorafusion_ext.nn.lora import AdaptedLinear, LoRALinear
from lorafusion_ext.nn.mapping import TileLayout
from lorafusion_ext.nn.pool import LoRAPool, PoolLayer

__all__ = [
    "AdaptedLinear", "AnalogLinear", "AnalogPoolLayer", "LoRAFusionLinear", "LoRALinear", "LoRAPool", "PoolLayer",
    "TileLayout", "clip_after_steps", "post_update_steps",
]
