"""The CPT techniques as Lightning callbacks, each switched on from `conf/callbacks/`.

Each is a `CPTCallback` (`base.py`: `check(geometry)` before anything is written, `summary()` into
`summary.json`); the stability-gap and task monitors share `monitor.py`'s curve machinery.
"""

from cpt.callbacks.health import Health
from cpt.callbacks.partial_freeze import PartialFreeze
from cpt.callbacks.replay import Replay
from cpt.callbacks.rewarm import Rewarm
from cpt.callbacks.save_on_failure import SaveOnFailure
from cpt.callbacks.stability_gap import StabilityGap
from cpt.callbacks.task_eval import TaskEval
from cpt.callbacks.throughput import Throughput
from cpt.callbacks.weight_drift import WeightDrift

__all__ = [
    "Health",
    "PartialFreeze",
    "Replay",
    "Rewarm",
    "SaveOnFailure",
    "StabilityGap",
    "TaskEval",
    "Throughput",
    "WeightDrift",
]
