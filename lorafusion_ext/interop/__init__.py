"""Interoperability with other simulators' models (IBM AIHWKIT)."""

from lorafusion_ext.interop.aihwkit_models import from_aihwkit_model, to_aihwkit_model

__all__ = ["from_aihwkit_model", "to_aihwkit_model"]
