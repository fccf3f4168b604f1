"""`python -m cpt.analysis.dashboard <entity/project> --group <sweep group>`: the papers' views of a
sweep as a wandb workspace, built with `wandb-workspaces` (no panel made by hand).

Views (a recipe names its defaults in `dashboard.views`; `--views` overrides them):
- `loss`: validation loss against tokens, one panel per domain, runs grouped by the swept key;
- `frontier`: final upstream against final downstream loss, one point per run (forgetting against
  adaptation), and forgetting on both domains;
- `gap`: the stability-gap monitor's curves over the first steps;
- `tasks`: the in-loop task scores (`task/<task>/<metric>`) over steps;
- `health`: training health over steps (`callbacks.health`, `model.z_loss`, `optim.on_spike`):
  the gradient norm before clipping and whether it clipped, weight and update norms per AdamW
  group, and the training loss beside the z-loss, spikes and skipped steps;
- `table`: parallel coordinates over the swept keys and the summary metrics, which are also the
  runs table's pinned columns.
The swept keys, domains and tasks come from the sweep itself: its runs' configs in wandb, or a local
multirun folder (`--from`). `--dry-run` builds the workspace and prints what it holds, saving
nothing (no network). Bad input is one line, exit status 2.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cpt.errors import UserError, exit_with
from cpt.results.columns import overrides_as_columns
from cpt.results.naming import swept_keys

VIEWS = ("loss", "frontier", "gap", "tasks", "health", "table")
HEALTH = {  # panel title -> the history keys it plots (a regex)
    "gradient norm before clipping": "train/grad_norm",
    "clipped steps (1: clipped to trainer.gradient_clip_val)": "train/grad_clipped",
    "weight norm per AdamW group": "train/param_norm/.*",
    "update norm per AdamW group": "train/update_norm/.*",
    "training loss, z-loss, spikes and skipped steps": "train/(loss|z_loss|spikes|skipped_steps)",
}


@dataclass
class DashboardConfig:
    """The wandb dashboard views a recipe shows by default (`python -m cpt.analysis.dashboard`)."""

    views: list[str] = field(default_factory=lambda: list(VIEWS))

    def __post_init__(self) -> None:
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown:
            raise ValueError(f"views: unknown view {unknown[0]!r}; expected some of {list(VIEWS)}")


class DashboardError(UserError, ValueError):
    """Bad input to the dashboard: one line, exit status 2."""


@dataclass
class Sweep:
    """What a dashboard needs to know of a sweep."""

    group: str
    swept: list[str]
    domains: list[str]
    tasks: list[str] = field(default_factory=list)
    views: list[str] = field(default_factory=lambda: list(VIEWS))
    gap_steps: int = 200  # the dense part of the stability-gap schedule: the gap's x range


def sweep_from_configs(group: str, configs: list[dict[str, Any]]) -> Sweep:
    """From the runs' configs (nested, with `overrides`): the swept keys are the overrides whose
    value differs between runs; the rest from the first config."""
    if not configs:
        raise DashboardError(f"--group: {group!r} has no runs")
    values: dict[str, set[Any]] = {}
    for config in configs:
        for key, value in overrides_as_columns(config.get("overrides") or []).items():
            values.setdefault(key, set()).add(value)
    first = configs[0]
    callbacks = first.get("callbacks") or {}
    dense = (callbacks.get("stability_gap") or {}).get("dense") or [[200, 1]]
    board = first.get("dashboard") or {}
    return Sweep(
        group=group,
        swept=sorted(k for k, v in values.items() if len(v) > 1),
        domains=list((first.get("data") or {}).get("domains") or {}),
        tasks=list((callbacks.get("task_eval") or {}).get("tasks") or []),
        views=list(board.get("views") or VIEWS),
        gap_steps=int(dense[-1][0]),
    )


def sweep_from_folder(folder: str | Path) -> Sweep:
    """A local multirun folder: its jobs' resolved configs, and the keys its `multirun.yaml`
    sweeps."""
    root = Path(folder)
    jobs = sorted(p.parent.parent for p in root.glob("**/.hydra/overrides.yaml"))
    configs = []
    for job in jobs:
        resolved = job / "config.resolved.yaml"
        if resolved.is_file():
            config = yaml.safe_load(resolved.read_text()) or {}
            config["overrides"] = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
            configs.append(config)
    if not configs:
        raise DashboardError(
            f"--from: {root}: no job of a sweep started there (config.resolved.yaml)"
        )
    sweep = sweep_from_configs(root.name, configs)
    declared = swept_keys(str(root))  # the sweep's own (jobs refused at the start count too)
    if declared is not None:
        sweep.swept = sorted(declared)
    return sweep


def build(entity: str, project: str, sweep: Sweep) -> Any:
    """The wandb workspace of `sweep` (built offline; `save()` uploads it)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    try:
        DashboardConfig(sweep.views)  # the recipe's own check of the names
    except ValueError as err:
        raise DashboardError(f"--{err}") from None
    pair = ["upstream", "downstream"]
    up, down = pair if set(pair) <= set(sweep.domains) else (sweep.domains * 2 or pair)[:2]
    sections = []
    if "loss" in sweep.views:
        panels = [
            wr.LinePlot(
                title=f"{d}: validation loss against tokens", x="val/tokens", y=[f"val/{d}/loss"]
            )
            for d in sweep.domains
        ]
        sections.append(ws.Section(name="loss against tokens", panels=panels, is_open=True))
    if "frontier" in sweep.views:
        panels = [
            wr.ScatterPlot(
                title=f"final {up} against final {down} loss (one point per run)",
                x=wr.SummaryMetric(f"final/val/{up}/loss"),
                y=wr.SummaryMetric(f"final/val/{down}/loss"),
            ),
            wr.ScatterPlot(
                title="forgetting (final minus initial loss) on both domains",
                x=wr.SummaryMetric(f"forgetting/{up}"),
                y=wr.SummaryMetric(f"forgetting/{down}"),
            ),
        ]
        sections.append(
            ws.Section(name="forgetting against adaptation", panels=panels, is_open=True)
        )
    if "gap" in sweep.views:
        panels = [
            wr.LinePlot(
                title=f"{d}: stability gap (held-out loss, first {sweep.gap_steps} steps)",
                x="trainer/global_step",
                y=[f"stability_gap/{d}/loss"],
                range_x=(0, sweep.gap_steps),
            )
            for d in sweep.domains
        ]
        sections.append(ws.Section(name="stability gap", panels=panels, is_open=True))
    if "tasks" in sweep.views and sweep.tasks:
        panels = [
            wr.LinePlot(
                title=f"{task} during training",
                x="trainer/global_step",
                metric_regex=f"task/{task}/.*",
            )
            for task in sweep.tasks
        ]
        sections.append(ws.Section(name="tasks", panels=panels, is_open=True))
    if "health" in sweep.views:
        panels = [
            wr.LinePlot(title=title, x="trainer/global_step", metric_regex=regex)
            for title, regex in HEALTH.items()
        ]
        sections.append(ws.Section(name="training health", panels=panels, is_open=False))
    summaries = [f"final/val/{d}/loss" for d in sweep.domains]
    summaries += [f"forgetting/{d}" for d in sweep.domains]
    summaries += [f"gap/{d}/peak" for d in sweep.domains if "gap" in sweep.views]
    if "table" in sweep.views:
        columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in sweep.swept]
        columns += [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(k)) for k in summaries]
        panel = wr.ParallelCoordinatesPlot(title="swept keys and results", columns=columns)
        sections.append(ws.Section(name="runs", panels=[panel], is_open=True))
    settings = ws.RunsetSettings(
        filters=[ws.Metric("Group") == sweep.group],
        groupby=[ws.Config(sweep.swept[0])] if sweep.swept else [],
        pinned_columns=[f"config:{k}" for k in sweep.swept] + [f"summary:{k}" for k in summaries],
    )
    return ws.Workspace(
        entity=entity,
        project=project,
        name=f"cpt: {sweep.group}",
        sections=sections,
        runset_settings=settings,
    )


def references(workspace: Any) -> list[tuple[str, str]]:
    """(kind, key) of every metric and config key the workspace's panels and table name:
    `history` (a logged key, or a `regex` over them), `summary`, `config` (a dotted path)."""
    found: list[tuple[str, str]] = []
    for section in workspace.sections:
        for panel in section.panels:
            kind = type(panel).__name__
            if kind == "LinePlot":
                found += [("history", panel.x)] + [("history", y) for y in panel.y or []]
                if panel.metric_regex:
                    found.append(("regex", panel.metric_regex))
            elif kind == "ScatterPlot":
                found += [(_kind(m), m.name) for m in (panel.x, panel.y) if m is not None]
            elif kind == "ParallelCoordinatesPlot":
                found += [(_kind(c.metric), c.metric.name) for c in panel.columns]
    for column in workspace.runset_settings.pinned_columns:
        kind, _, key = column.partition(":")
        if kind in ("config", "summary"):  # `run:displayName` is wandb's own
            found.append((kind, key))
    return found


def _kind(metric: Any) -> str:
    return {"SummaryMetric": "summary", "Config": "config"}.get(type(metric).__name__, "history")


def sweep_from_wandb(entity: str, project: str, group: str) -> Sweep:
    from cpt.analysis.collect import WandbInputError, group_runs

    try:
        runs = group_runs(entity, project, group, flag="--group")
    except WandbInputError as err:
        raise DashboardError(str(err)) from None
    return sweep_from_configs(group, [dict(r.config) for r in runs])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cpt.analysis.dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("project", help="entity/project")
    parser.add_argument("--group", required=True, help="the sweep's wandb group (its folder name)")
    parser.add_argument("--views", default=None, help=f"comma-separated, of {','.join(VIEWS)}")
    parser.add_argument("--from", dest="folder", default=None, help="read the sweep from here")
    parser.add_argument("--dry-run", action="store_true", help="build and print, save nothing")
    args = parser.parse_args(argv)
    try:
        entity, _, project = args.project.partition("/")
        if not entity or not project or "/" in project:
            raise DashboardError(f"project: expected entity/project, got {args.project!r}")
        if args.folder:
            sweep = sweep_from_folder(args.folder)
            sweep.group = args.group
        else:
            sweep = sweep_from_wandb(entity, project, args.group)
        if args.views:
            sweep.views = args.views.split(",")
        workspace = build(entity, project, sweep)
    except DashboardError as err:
        exit_with(err)
    for section in workspace.sections:
        print(f"{section.name}: {len(section.panels)} panels")
    if args.dry_run:
        print("dry run: nothing saved")
        return
    workspace.save()
    print(f"workspace: {workspace.url}")


if __name__ == "__main__":
    main()
