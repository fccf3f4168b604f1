"""`PartialFreeze`: train only some parameters, to keep old knowledge in the frozen rest.

Either `trainable` name patterns (regular expressions, matched with `re.search`), or `half=true`:
in every block, half of its weight matrices chosen by `seed` are frozen, as in Half Fine-Tuning.
Embeddings, norms and the output layer stay trainable unless patterns say otherwise. The choice is
made before the optimizer is built, so frozen parameters get no optimizer state.
"""

from __future__ import annotations

import logging
import random
import re
from typing import Any

import lightning as L

from cpt.callbacks.base import CPTCallback, expect, is_count

log = logging.getLogger(__name__)


class PartialFreeze(CPTCallback):
    def __init__(
        self, trainable: list[str] | None = None, half: bool = False, seed: int = 0
    ) -> None:
        if bool(trainable) == half:
            raise ValueError(
                "callbacks.partial_freeze: give either trainable patterns or half=true"
            )
        expect(is_count(seed, 0), "callbacks.partial_freeze.seed", "a seed >= 0", seed)
        self.patterns = [re.compile(p) for p in (trainable or [])]
        self.half, self.seed = half, seed
        self.frozen: list[str] = []

    def choose_frozen(self, names: list[str]) -> list[str]:
        if self.patterns:
            return [n for n in names if not any(p.search(n) for p in self.patterns)]
        rng = random.Random(self.seed)
        frozen = []
        blocks: dict[str, list[str]] = {}
        for name in names:
            parts = name.split(".")
            if parts[0] == "layers" and name.endswith(".weight") and "layernorm" not in name:
                blocks.setdefault(parts[1], []).append(name)
        for block in sorted(blocks, key=int):
            matrices = sorted(blocks[block])
            frozen += rng.sample(matrices, len(matrices) // 2)
            # a frozen matrix freezes its bias too: the pair is one linear map
        frozen += [
            n.removesuffix(".weight") + ".bias"
            for n in frozen
            if n.removesuffix(".weight") + ".bias" in names
        ]
        return sorted(frozen)

    def summary(self) -> dict[str, Any]:
        """The callback protocol: what this callback adds to `summary.json`."""
        return {"frozen_parameters": self.frozen}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        params = dict(pl_module.model.named_parameters())
        self.frozen = self.choose_frozen(list(params))
        for name in self.frozen:
            params[name].requires_grad_(False)
        total = sum(p.numel() for p in params.values())
        kept = sum(p.numel() for p in params.values() if p.requires_grad)
        log.info(
            "PartialFreeze: training %d of %d parameters (%.1f %%)", kept, total, 100 * kept / total
        )
