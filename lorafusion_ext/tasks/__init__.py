"""Tasks by kind: GLUE classification/regression, SQuAD extractive QA and BBH generation,
behind one interface (`Task`) that the pipelines train and evaluate through. `get_task(name)`
looks one up."""

from __future__ import annotations

from lorafusion_ext.data.bbh import BBH_TASKS
from lorafusion_ext.data.glue import GLUE_TASKS, TaskSpec
from lorafusion_ext.tasks.base import CLASSIFICATION, EXTRACTIVE_QA, GENERATION, DataConfig, Task
from lorafusion_ext.tasks.classification import ClassificationTask
from lorafusion_ext.tasks.extractive_qa import ExtractiveQATask
from lorafusion_ext.tasks.generation import BBHSuite, GenerationTask

#: Extractive QA tasks by name.
QA_TASKS = ("squad",)


def task_names() -> list[str]:
    """Every task name `get_task` knows."""
    return [*sorted(GLUE_TASKS), *QA_TASKS, "bbh", *(f"bbh:{t}" for t in BBH_TASKS)]


def get_task(task: "str | Task | TaskSpec") -> Task:
    """The task called `task` (case-insensitive; "SST-2" = "sst2"; "bbh:<name>" one BBH task,
    "bbh" all 27), or `task` itself when it is already a Task (a GLUE TaskSpec is wrapped).

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if isinstance(task, Task):
        return task
    if isinstance(task, TaskSpec):
        return ClassificationTask(task)
    if not isinstance(task, str):
        raise ValueError(f"task = {task!r}; expected a task name")
    if task.lower().startswith("bbh:"):
        return GenerationTask(task)
    if task.lower() == "bbh":
        return BBHSuite()
    key = task.lower().replace("-", "").replace("_", "")
    if key in ("squad", "squad1", "squadv1", "squadv11", "squad11"):
        return ExtractiveQATask("squad")
    if key in GLUE_TASKS:
        return ClassificationTask(GLUE_TASKS[key])
    raise ValueError(f"unknown task {task!r}; expected one of {task_names()}")


__all__ = ["BBHSuite", "CLASSIFICATION", "EXTRACTIVE_QA", "GENERATION", "QA_TASKS", "ClassificationTask", "DataConfig",
           "ExtractiveQATask", "GenerationTask", "Task", "get_task", "task_names"]
