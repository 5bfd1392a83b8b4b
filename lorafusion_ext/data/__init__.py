"""GLUE data: the task registry, loading (a local GLUE folder or Hugging Face `datasets`),
tokenisation and batching."""

from lorafusion_ext.data.glue import GLUE_TASKS, Example, TaskSpec, load_glue
from lorafusion_ext.data.tokenize import EncodedDataset, encode

__all__ = ["GLUE_TASKS", "EncodedDataset", "Example", "TaskSpec", "encode", "load_glue"]
