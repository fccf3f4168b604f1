"""Which checkpoints a run keeps: the last few, the steps a study names, and `last.ckpt`.

A 410M run checkpointing every 1000 steps would otherwise keep every one (about 117 GB). With
`keep_last: k` only the newest k periodic checkpoints stay, plus every step in `keep_steps` (the
revisions a later study continues from, like Pythia's `step<N>`), plus `last.ckpt`, plus the
checkpoint this run resumed from while it runs. Files and sharded folders alike; global rank 0
deletes, after every rank finished writing. `python -m cpt.plan` states what they take on disk.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from cpt.callbacks.base import expect, is_count
from cpt.run.geometry import BatchGeometry

STEP = re.compile(r"step(\d+)\.ckpt$")


class KeepCheckpoints(ModelCheckpoint):
    def __init__(
        self, keep_last: int | None = 2, keep_steps: list[int] | None = None, **kwargs: Any
    ) -> None:
        key, every = "callbacks.checkpoint", kwargs.get("every_n_train_steps")
        expect(every is None or is_count(every, 0), f"{key}.every_n_train_steps",
               "a step count >= 0 (0: last.ckpt only) or null", every)  # fmt: skip
        expect(keep_last is None or is_count(keep_last), f"{key}.keep_last",
               "a count >= 1 or null (all)", keep_last)  # fmt: skip
        steps = list(keep_steps or [])
        expect(all(is_count(s, 0) for s in steps), f"{key}.keep_steps", "step numbers >= 0", steps)
        # its own folder: a resumed run writes last.ckpt again, not last-v1.ckpt beside it
        super().__init__(**{"save_top_k": -1, "enable_version_counter": False, **kwargs})
        self.keep_last, self.keep_steps = keep_last, sorted(set(steps))
        self.deleted: list[str] = []

    def check(self, geometry: BatchGeometry) -> None:
        """The callback protocol: a step to keep must be one that is saved."""
        every = self._every_n_train_steps
        missed = [s for s in self.keep_steps if not every or s % every or s > geometry.max_steps]
        if missed:
            raise ValueError(
                f"callbacks.checkpoint.keep_steps: {missed} are not saved; expected multiples of "
                f"every_n_train_steps ({every}) up to the run's {geometry.max_steps} steps"
            )

    def kept(self, steps: list[int], resumed: int | None = None) -> set[int]:
        """Which of the saved `steps` stay."""
        newest = sorted(steps)[-self.keep_last :] if self.keep_last else steps
        return set(newest) | (set(steps) & set(self.keep_steps)) | ({resumed} - {None})

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        trainer.strategy.barrier()  # every rank's shards are written before any is deleted
        if trainer.is_global_zero:
            self._prune(Path(filepath).parent, trainer.ckpt_path)

    def _prune(self, folder: Path, resumed_from: str | None) -> None:
        saved = {int(m.group(1)): p for p in folder.iterdir() if (m := STEP.search(p.name))}
        resumed = None
        if resumed_from and (m := STEP.search(Path(resumed_from).name)):
            resumed = int(m.group(1)) if Path(resumed_from).parent == folder else None
        for step, path in saved.items():
            if step not in self.kept(list(saved), resumed):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                self.deleted.append(path.name)

    def summary(self) -> dict[str, Any]:
        return {"checkpoints_deleted": list(self.deleted)} if self.deleted else {}
