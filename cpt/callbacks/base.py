"""The one protocol between the entry point and the parts of a run it does not know by name.

Every cpt callback (and the FSDP2 strategy) is a `RunPart`:
- `check(geometry)`: raise `ValueError("key: message")` when the run as configured cannot work;
  called once by `cpt.run.build`, before any data is prepared or any file is written;
- `summary()`: a dict merged into `summary.json` (and the wandb summary) at the end of the run.
Both default to nothing; a Lightning callback that is not a `CPTCallback` (e.g. `ModelCheckpoint`)
takes part in neither.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import lightning as L

from cpt.run.geometry import BatchGeometry


@runtime_checkable
class RunPart(Protocol):
    def check(self, geometry: BatchGeometry) -> None: ...

    def summary(self) -> dict[str, Any]: ...


def expect(ok: bool, key: str, expected: str, value: Any) -> None:
    """A callback's field check: `ValueError("<key>: expected <expected>, got <value>")`."""
    if not ok:
        raise ValueError(f"{key}: expected {expected}, got {value!r}")


def is_count(value: Any, low: int = 1) -> bool:
    """An int (not a bool) of at least `low`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_dense(key: str, dense: list[list[int]]) -> None:
    """A dense-then-sparse schedule: [[until, every], ...], `until` rising, both counts."""
    pairs = [list(p) for p in dense]
    ok = all(len(p) == 2 and is_count(p[0]) and is_count(p[1]) for p in pairs) and all(
        a[0] < b[0] for a, b in zip(pairs, pairs[1:])
    )
    expect(ok, key, "[[until, every], ...] with counts >= 1 and rising `until`", dense)


class CPTCallback(L.Callback):
    """A Lightning callback that takes part in the protocol (both methods optional to override)."""

    def check(self, geometry: BatchGeometry) -> None:
        """Raise `ValueError("key: message")` when this callback cannot work in this run."""

    def summary(self) -> dict[str, Any]:
        """What this callback adds to `summary.json`."""
        return {}
