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
from typing import Literal

Split = Literal["train", "validation"]


def task_split(task_id: str, val_fraction: float = 0.05) -> Split:
    """ "validation" for about `val_fraction` of task ids (by a hash of the id), else "train"."""
    digest = hashlib.blake2b(task_id.encode(), digest_size=8).digest()
    position = int.from_bytes(digest, "big") / 2**64  # uniform in [0, 1)
    return "validation" if position < val_fraction else "train"
