"""GLUE data: the task registry, loading (a local GLUE folder or Hugging Face `datasets`),
tokenisation and batching."""

from lorafusion_ext.data.glue import GLUE_TASKS, Example, GlueUnavailableError, TaskSpec, check_glue, load_glue
from lorafusion_ext.data.tokenize import EncodedDataset, encode

__all__ = ["GLUE_TASKS", "EncodedDataset", "Example", "GlueUnavailableError", "TaskSpec", "check_glue", "encode",
           "load_glue"]
