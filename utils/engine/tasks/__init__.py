"""The tasks of main.py's --task, each a utils.engine.tasks.base.Task: base.py (the interface: flags, datasets,
training step, evaluation, selection metric, logged scalars), retrieval.py, recognition.py. ``TASKS`` maps a
--task name to its Task; ``register_task`` adds one (a plug-in: nothing else changes)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from utils.engine.tasks.base import EvaluationRun, Selection, Task
from utils.engine.tasks.recognition import RecognitionTask
from utils.engine.tasks.retrieval import RetrievalTask

TASKS: Dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` under its name (ValueError for a name taken); returns it."""
    if not task.name or task.name in TASKS:
        raise ValueError(f"a task needs a name not yet registered, got {task.name!r} (registered: {list(TASKS)})")
    TASKS[task.name] = task
    return task


def task_of_run(run_dir: str | Path) -> Task:
    """The Task a run folder of main.py ran (its hparams.json's "task"; retrieval for a folder without one, as
    runs before --task were); ValueError naming a task not registered here."""
    hparams = Path(run_dir) / "hparams.json"
    name = json.loads(hparams.read_text()).get("task", "retrieval") if hparams.is_file() else "retrieval"
    if name not in TASKS:
        raise ValueError(f"{hparams}: task {name!r} is not one of the registered tasks {list(TASKS)}")
    return TASKS[name]


register_task(RetrievalTask())
register_task(RecognitionTask())

__all__ = ["TASKS", "EvaluationRun", "Selection", "Task", "register_task", "task_of_run"]
