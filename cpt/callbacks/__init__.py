"""The CPT techniques as Lightning callbacks, each switched on from `conf/callbacks/`."""

from cpt.callbacks.partial_freeze import PartialFreeze
from cpt.callbacks.preemption import Preemption
from cpt.callbacks.replay import Replay
from cpt.callbacks.rewarm import Rewarm
from cpt.callbacks.stability_gap import StabilityGap
from cpt.callbacks.throughput import Throughput
from cpt.callbacks.weight_drift import WeightDrift

__all__ = [
    "PartialFreeze",
    "Preemption",
    "Replay",
    "Rewarm",
    "StabilityGap",
    "Throughput",
    "WeightDrift",
]
