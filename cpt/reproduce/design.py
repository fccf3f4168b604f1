"""What the twins run, shared by the runner (`twins.py`), the reports and the claims."""

from __future__ import annotations

# The union baseline is the union of what a sequential run saw (Ibrahim et al.): the upstream
# model's windows and the continued run's, in their proportion over the same steps. Each shift's
# union matches the replay arm its claim compares with (the paper: 5 % replay for a weak shift,
# about 25 % for a strong one).
UPSTREAM_STEPS, CPT_STEPS, BATCH = 3000, 300, 16  # experiment=twin_upstream, conf/scale/cpu.yaml
UNION_REPLAY = {"strong": 0.25, "weak": 0.05}


def union_windows(shift: str) -> dict[str, int]:
    """The windows of each domain the sequential run with the shift's replay fraction saw."""
    replayed = round(CPT_STEPS * BATCH * UNION_REPLAY[shift])
    return {
        "upstream": UPSTREAM_STEPS * BATCH + replayed,
        "downstream": CPT_STEPS * BATCH - replayed,
    }
