"""The CPT techniques as callbacks: re-warming and optimizer states, replay, stability gap, drift."""

from __future__ import annotations

import pytest

from cpt.callbacks import Replay


# ---- replay fraction schedules ------------------------------------------------------------------
def test_replay_fraction_schedules():
    constant = Replay(fraction=0.25)
    assert constant.fraction_at(0) == constant.fraction_at(999) == 0.25
    decaying = Replay(fraction=0.5, end_fraction=0.0)
    decaying.total_steps = 100
    assert [decaying.fraction_at(s) for s in (0, 50, 100)] == pytest.approx([0.5, 0.25, 0.0])
    late = Replay(source="code", fraction=0.1, end_fraction=0.3, start=0.85, end=0.85)  # upsampling
    late.total_steps = 100
    assert (late.fraction_at(84), late.fraction_at(85), late.fraction_at(99)) == (0.1, 0.3, 0.3)
    with pytest.raises(ValueError, match="expected a value in"):
        Replay(fraction=1.5)
