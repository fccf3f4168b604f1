"""The CPT techniques as Lightning callbacks, each switched on from `conf/callbacks/`.

The entry point talks to callbacks through one small protocol, both parts optional:
- `check(geometry)`: raise `ValueError("key: message")` when the run as configured cannot work
  (called once before any data is prepared or any file is written);
- `summary()`: a dict merged into `summary.json` (and the wandb summary) at the end of the run.
"""

from cpt.callbacks.partial_freeze import PartialFreeze
from cpt.callbacks.replay import Replay
from cpt.callbacks.rewarm import Rewarm
from cpt.callbacks.save_on_failure import SaveOnFailure
from cpt.callbacks.stability_gap import StabilityGap
from cpt.callbacks.task_eval import TaskEval
from cpt.callbacks.throughput import Throughput
from cpt.callbacks.weight_drift import WeightDrift

__all__ = [
    "PartialFreeze",
    "Replay",
    "Rewarm",
    "SaveOnFailure",
    "StabilityGap",
    "TaskEval",
    "Throughput",
    "WeightDrift",
]
