"""`held_out`: another task whose training examples are split again, part of them held out as the
test split, so that settings (epochs, learning rates) can be chosen on examples the task's own test
split never shares:

    --config.task=held_out --config.task_options.task=bbc_topic --config.task_options.n_held_out=80 \
        --config.task_options.n_train=480 --config.task_options.max_words=40

Every other option is the inner task's.
"""
from typing import Any

from w2s.config import ConfigError
from w2s.tasks import TaskData, load_task, register_task, splits

# Word-bigram Jaccard from which two training texts count as copies and stay on one side (the
# tweets' threshold; a task's own deduplication has already joined its closer copies).
NEAR_DUPLICATE = 0.5


@register_task("held_out")
def held_out(seed: int, task: str = "", n_held_out: int = 100, near_duplicate: float = NEAR_DUPLICATE,
             **options: Any) -> TaskData:
    """Task `task` (with the other `options`) of this seed: its training split less `n_held_out` examples, half
    of each class, which become the test split; the task's own test split is not used at all."""
    if not task:
        raise ConfigError("task held_out: option 'task' names the task whose training examples it splits, "
                          "e.g. --config.task_options.task=bbc_topic.")
    if task == "held_out":
        raise ConfigError("task held_out: option 'task' must name another task, not held_out itself.")
    inner = load_task(task, seed, **options)
    rest, held = splits.hold_out(f"held_out of {task}", inner.train, n_held_out, seed, near_duplicate)
    return TaskData("held_out", rest, held)
