"""Train / validation split decided by the task id alone.

Every sample of a task lands on the same side, in every export and every run, so a task
seen in training never leaks into validation.

>>> task_split("task-1") in ("train", "validation")
True
>>> task_split("anything", val_fraction=0.0), task_split("anything", val_fraction=1.0)
('train', 'validation')
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from agentmill.records import Task

Split = Literal["train", "validation"]


def task_split(task_id: str, val_fraction: float = 0.05) -> Split:
    """ "validation" for about `val_fraction` of task ids (by a hash of the id), else "train"."""
    digest = hashlib.blake2b(task_id.encode(), digest_size=8).digest()
    position = int.from_bytes(digest, "big") / 2**64  # uniform in [0, 1)
    return "validation" if position < val_fraction else "train"


def task_side(task_id: str, task: Task | None, val_fraction: float = 0.05) -> Split:
    """The side of a task's records: the task's own `split` when its source set one, else
    `task_split(task_id, val_fraction)`.

    >>> from agentmill.records import Task
    >>> task_side("x", Task.create("q", split="validation"), 0.0)
    'validation'
    """
    if task is not None and task.split in ("train", "validation"):
        return task.split  # type: ignore[return-value]
    return task_split(task_id, val_fraction)


def side_path(path: Path, side: str) -> Path:
    """`<stem>.<side><suffix>` beside `path`.

    >>> side_path(Path("out/sft.jsonl"), "train").as_posix()
    'out/sft.train.jsonl'
    """
    return path.with_name(f"{path.stem}.{side}{path.suffix}")
