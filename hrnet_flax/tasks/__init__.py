"""Tasks: what is learned and measured. `TASKS` maps `TrainConfig.task` to its class."""

from hrnet_flax.tasks.base import Task
from hrnet_flax.tasks.classification import Classification
from hrnet_flax.tasks.pose import Pose
from hrnet_flax.tasks.segmentation import Segmentation

TASKS: dict[str, type[Task]] = {Classification.name: Classification, Segmentation.name: Segmentation, Pose.name: Pose}


def get_task(name: str) -> type[Task]:
    """The task class registered as `name`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


__all__ = ["TASKS", "Classification", "Pose", "Segmentation", "Task", "get_task"]
