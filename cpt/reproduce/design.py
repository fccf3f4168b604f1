"""What the twins run, shared by the runner (`twins.py`), the reports and the claims."""

from __future__ import annotations

from pathlib import Path

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


# Gupta et al.'s twin: the points its claims compare (max LR, warm-up fraction), each run on both
# shifts with three seeds, and nothing else: the paper's setting (the upstream's max LR, 1 %
# warm-up), max LR 0.5x and 2x, warm-up 0 and 10 % (beyond Adam's beta2 horizon of about 1/(1 -
# 0.95) = 20 steps, where 1 % of 300 steps is 3), and the aggressive corner (2x, no warm-up).
GUPTA_POINTS = {
    "paper": (2e-3, 0.01),
    "lr_low": (1e-3, 0.01),
    "lr_high": (4e-3, 0.01),
    "warmup_0": (2e-3, 0.0),
    "warmup_10": (2e-3, 0.1),
    "aggressive": (4e-3, 0.0),
}
GUPTA_KEYS = ["shift", "optim.max_lr", "schedule.warmup", "seed"]


def gupta_point(name: str) -> list[str]:
    """The overrides of one of GUPTA_POINTS."""
    lr, warmup = GUPTA_POINTS[name]
    return [f"optim.max_lr={lr}", f"schedule.warmup={warmup}"]


def shared_no_replay(replay_out: Path) -> Path:
    """Where the replay twin's 0 % arm is: Gupta's paper-setting grid, which is the same
    configuration to the bit (tests/e2e/test_replay_run.py), so it is trained once."""
    return replay_out.parent / "gupta2023" / "grid" / "paper"


# Guo et al.'s general abilities, at small scale: a held-out domain of the old format (prose) about
# the new domain's content (Python), evaluated with its own same-domain task; the strong shift has
# one (continued on code: the standard library's documentation), the weak shift does not (its new
# domain is that documentation itself).
GUO_PROBE = {"strong": "python-docs"}
GUO_KEYS = ["shift", "mitigation", "seed"]
TASKS = ["next_line_downstream", "next_line_upstream"]  # conf/scale/cpu.yaml's


def guo_probe(shift: str) -> list[str]:
    """The overrides that add the shift's probe domain and its task (none without a probe)."""
    source = GUO_PROBE.get(shift)
    if source is None:
        return []
    return [
        f"++data.domains={{probe: {{source: {source}, val_tokens: 32768}}}}",
        f"callbacks.task_eval.tasks=[{','.join([*TASKS, 'next_line_probe'])}]",
    ]
