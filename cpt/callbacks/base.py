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


class CPTCallback(L.Callback):
    """A Lightning callback that takes part in the protocol (both methods optional to override)."""

    def check(self, geometry: BatchGeometry) -> None:
        """Raise `ValueError("key: message")` when this callback cannot work in this run."""

    def summary(self) -> dict[str, Any]:
        """What this callback adds to `summary.json`."""
        return {}
