"""lorafusion_ext: analog in-memory-computing crossbars for transformers, with HWA-LoRA and
LoRAFusion, as a C++/CUDA PyTorch extension."""

from lorafusion_ext import devices, nn, ops
from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.interop.peft import export_peft_adapter, import_peft_adapters
from lorafusion_ext.nn.convert import (
    attach_lora,
    attach_pool,
    convert_to_analog,
    lora_adapter,
    targets,
    task_context,
    trainable_parameters,
)
from lorafusion_ext.evaluation import DriftSweepResult, drift_sweep
from lorafusion_ext.interop import from_aihwkit_model, to_aihwkit_model
from lorafusion_ext.nn import AnalogLinear, LoRAFusionLinear, LoRALinear, LoRAPool
from lorafusion_ext.nn.deploy import analog_layers, drift, fold_drift_compensation, program, unprogram
from lorafusion_ext.nn.pool import load_pool, save_pool
from lorafusion_ext.ops.extension import build_info

__all__ = [
    "AnalogLinear", "DriftSweepResult", "HardwareConfig", "LoRAFusionLinear", "LoRALinear", "LoRAPool",
    "analog_layers", "attach_lora", "attach_pool", "build_info", "convert_to_analog", "devices", "drift",
    "drift_sweep", "export_peft_adapter", "fold_drift_compensation", "from_aihwkit_model", "import_peft_adapters", "load_pool", "lora_adapter", "nn", "ops",
    "program", "save_pool", "targets", "task_context", "to_aihwkit_model", "trainable_parameters", "unprogram",
]
__version__ = "0.1.0"
