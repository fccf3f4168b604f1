"""What `make reproduce` writes from a paper's runs: per grid the tidy tables (`cpt.analysis.collect`),
mean ± std per grid point, the claims' verdicts (`cpt.reproduce.claims`), figures per shift with
95 % bands (also copied, under 200 kB, into docs/figures/<paper>_<name>), `results.md`, and the
paper's generated section of docs/REPRODUCTION.md (between `<!-- reproduce:NAME -->` marks)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from cpt.analysis import plots  # noqa: E402
from cpt.analysis.collect import collect  # noqa: E402
from cpt.analysis.seeds import SEED, by_seed  # noqa: E402
from cpt.reproduce import claims as c  # noqa: E402
from cpt.reproduce import verdicts as v  # noqa: E402
from cpt.reproduce.design import (  # noqa: E402
    CPT_STEPS,
    GUO_KEYS,
    GUPTA_KEYS,
    UNION_REPLAY,
    UPSTREAM_STEPS,
    shared_no_replay,
    union_windows,
)

DOCS = Path("docs")
FIGURE_LIMIT = 200_000  # bytes: committed figures stay small
WALL = "train_seconds.json"  # a paper's training wall time, written by cpt.reproduce.twins


def ran(folder: Path) -> bool:
    """Whether some job of this grid has finished (a report shows what there is)."""
    return any(folder.glob("*/summary.json"))


def results(
    folder: Path, swept: list[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Collect a grid (or a folder of grids, whose keys `swept` names): its runs (with the derived
    columns verdicts use), their seed groups and the curves."""
    collect(folder)
    runs, curves = plots.load(folder)
    runs = v.derive(runs)
    swept = swept or runs.attrs.get("swept") or [SEED]
    if SEED not in swept:
        swept = [*swept, SEED]
    runs.attrs["swept"] = swept
    return runs, by_seed(runs, swept), curves


def figure(name: str, fig, folder: Path, paper: str) -> str:
    """Save a figure into the results folder and, small, into docs/figures/<paper>_<name>."""
    path = folder / name
    fig.savefig(path, dpi=90)
    plots.plt.close(fig)
    if DOCS.is_dir() and path.stat().st_size <= FIGURE_LIMIT:
        (DOCS / "figures").mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / "figures" / f"{paper}_{name}")
    return name


def by_shift(runs: pd.DataFrame, curves: pd.DataFrame, shift: str):
    """The runs (and curves) of one shift, labelled by the other swept keys."""
    part = runs[runs["shift"] == shift] if "shift" in runs else runs
    part.attrs["swept"] = [k for k in runs.attrs.get("swept", []) if k != "shift"]
    return part, curves[curves["run"].isin(part["run"])]


SHIFTS = {
    "strong": "strong shift: package-docs (upstream) -> python-code (downstream)",
    "weak": "weak shift: package-docs (upstream) -> python-docs (downstream)",
}


def shift_figure(fig, name: str, shift: str, folder: Path, paper: str) -> str:
    """`figure` for one shift: titled by the shift, saved as `<name>_<shift>.png`."""
    fig.suptitle(SHIFTS.get(shift, shift), fontsize=10)
    fig.tight_layout()
    return figure(f"{name}_{shift}.png", fig, folder, paper)


def write(folder: Path, title: str, sections: list[str]) -> str:
    text = f"# {title}\n\n" + "\n".join(sections)
    runs = sum(
        json.loads(path.read_text()).get("wall_time_s", 0) for path in folder.rglob("summary.json")
    )
    text += f"\n\nIts runs' own wall times add up to {runs / 60:.0f} min"
    if (folder / WALL).is_file():  # the calls that trained it to the end, two runs side by side
        wall = json.loads((folder / WALL).read_text())
        text += f"; the training took {wall['seconds'] / 60:.0f} min"
        if wall.get("processors"):
            text += f" on {' and '.join(wall['processors'])}, {', '.join(wall['dates'])}"
    text += ".\n"
    (folder / "results.md").write_text(text)
    print(text, flush=True)
    return text


def shifts(runs: pd.DataFrame) -> list[str]:
    return sorted(runs["shift"].dropna().unique()) if "shift" in runs else ["strong"]


INFINITE = {  # folder: (task, what it is, its overrides)
    "task1_infinite": (1, "infinite, constant to the end", ["schedule.anneal=0.0"]),
    "task1_infinite_annealed": (
        1,
        "infinite, annealed over the last 15 %",
        ["schedule.anneal=0.15"],
    ),
    "task1_cosine": (
        1,
        "cosine re-warm + re-decay",
        ["schedule=cosine", "schedule.warmup=0.01", "schedule.min_lr_ratio=0.1"],
    ),
    "task2_infinite": (
        2,
        "from task 1's constant: constant carried, no re-warm",
        ["schedule.anneal=0.0"],
    ),
    "task2_infinite_annealed": (
        2,
        "from task 1's constant: constant, annealed at the end",
        ["schedule.anneal=0.15"],
    ),
    "task2_cosine": (
        2,
        "from task 1's cosine: re-warm + re-decay again",
        [
            "schedule=cosine",
            "schedule.warmup=0.01",
            "schedule.min_lr_ratio=0.1",
            "optim.max_lr=2e-3",
            "callbacks.rewarm.optimizer_state=fresh",
        ],
    ),
}


# ---- the papers ----------------------------------------------------------------------------------
def gupta2023(out: Path) -> str:
    runs, table, curves = results(out / "grid", GUPTA_KEYS)  # grid/<point>/: one grid per point
    sections = [v.grid_table(table, ["shift", "optim.max_lr", "schedule.warmup"])]
    constant = runs.iloc[0:0]  # none yet: its claim is left out
    if ran(out / "constant"):
        constant, constant_table, _ = results(out / "constant")
        sections += [
            "",
            "Constant LR 2e-4, no re-warming:",
            "",
            v.grid_table(constant_table, ["shift"]),
        ]
    claims = c.gupta_claims(runs, constant)
    if ran(out / "revisions"):
        revision_runs, revisions, _ = results(out / "revisions")
        revisions["upstream step"] = revisions["init"].map(revision_step)
        revision_runs["upstream step"] = revision_runs["init"].map(revision_step)
        sections += [
            "",
            "From earlier upstream checkpoints (strong shift, warm-up 1 %, max LR 2e-3):",
        ]
        sections += ["", v.grid_table(revisions, ["upstream step"])]
        claims += c.revision_claims(revision_runs)
    made = []
    for shift in shifts(runs):
        part, part_curves = by_shift(runs, curves, shift)
        rewarming = plots.plot_rewarming(part, part_curves)
        made.append(shift_figure(rewarming, "rewarming", shift, out, "gupta2023"))
        gap = plots.plot_stability_gap(part, part_curves, max_step=300)
        made.append(shift_figure(gap, "stability_gap", shift, out, "gupta2023"))
    sections += ["", v.claims_table(claims), "", "Figures: " + ", ".join(made)]
    return write(out, "Gupta et al. 2023, small-scale twin", sections)


def ibrahim2024_replay(out: Path) -> str:
    runs, table, curves = results(out / "grid")
    zero = shared_no_replay(out)
    if ran(zero):  # the 0 % arm: Gupta's paper-setting runs, the same configuration
        more, _, more_curves = results(zero)
        more["callbacks.replay.fraction"] = 0.0
        more["run"], more_curves["run"] = "gupta/" + more["run"], "gupta/" + more_curves["run"]
        swept = runs.attrs["swept"]
        runs = pd.concat([more, runs], ignore_index=True)
        runs.attrs["swept"] = swept
        curves = pd.concat([more_curves, curves], ignore_index=True)
        table = by_seed(runs, swept)
    sections = [v.grid_table(table, ["shift", "callbacks.replay.fraction"], replayed=True)]
    union = runs.iloc[0:0]  # none yet: its claims are left out
    if any((out / "union").glob("*/*/summary.json")):
        union = chained(out / "union", ["shift", SEED])  # union/<shift>/seed-<n>
        mixes = ", ".join(
            f"{shift}: {w['upstream']:,} upstream and {w['downstream']:,} downstream windows "
            f"({UNION_REPLAY[shift]:.0%} replay)"
            for shift, w in ((s, union_windows(s)) for s in shifts(union))
        )
        sections += [
            "",
            f"The union baseline: from scratch for {UPSTREAM_STEPS + CPT_STEPS} steps on the union "
            f"of what the sequential run saw, in its proportion ({mixes}):",
            "",
            v.grid_table(by_seed(union, ["shift", SEED]), ["shift"]),
        ]
    made = []
    for shift in shifts(runs):
        part, _ = by_shift(runs, curves, shift)
        frontier = plots.plot_replay_frontier(part)
        made.append(shift_figure(frontier, "replay_frontier", shift, out, "ibrahim2024_replay"))
    sections += [
        "",
        v.claims_table(c.replay_claims(runs, union)),
        "",
        "Figures: " + ", ".join(made),
    ]
    return write(out, "Ibrahim et al. 2024 (replay), small-scale twin", sections)


def chained(folder: Path, keys: list[str]) -> pd.DataFrame:
    """The runs of single-run folders `<key 1>/<key 2>/.../seed-<n>` (cpt.reproduce.twins), with
    the derived columns and a column per key from the path."""
    collect(folder)
    runs, _ = plots.load(folder)
    runs = v.derive(runs)
    for n, key in enumerate(k for k in keys if k != SEED):
        runs[key] = [Path(r).parts[n] for r in runs["run"]]
    runs.attrs["swept"] = keys
    return runs


def ibrahim2024_infinite(out: Path) -> str:
    runs = chained(out, ["variant", "shift", SEED])  # <variant>/<shift>/seed-<n>
    _, curves = plots.load(out)
    table = by_seed(runs, ["variant", "shift", SEED])
    table["variant"] = pd.Categorical(table["variant"], list(INFINITE))
    table = table.sort_values(["shift", "variant"])
    table["run"] = [f"task {INFINITE[n][0]}, {INFINITE[n][1]}" for n in table["variant"]]
    sections = [v.grid_table(table, ["shift", "run"])]
    chains = {
        "infinite, constant carried into task 2": ("task1_infinite", "task2_infinite"),
        "infinite, annealed at the end of task 2": ("task1_infinite", "task2_infinite_annealed"),
        "cosine re-warm + re-decay on each task": ("task1_cosine", "task2_cosine"),
    }
    made = []
    for shift in shifts(runs):
        mine, mine_curves = by_shift(runs, curves, shift)
        for task in (1, 2):
            part = mine[mine["variant"].str.startswith(f"task{task}")]
            part.attrs["swept"] = ["variant", SEED]
            gap = plots.plot_stability_gap(
                part, mine_curves[mine_curves["run"].isin(part["run"])], max_step=300
            )
            name = f"stability_gap_task{task}"
            made.append(shift_figure(gap, name, shift, out, "ibrahim2024_infinite"))
        sequence = plots.plot_task_sequence(mine, mine_curves, chains, steps=300)
        made.append(shift_figure(sequence, "task_sequence", shift, out, "ibrahim2024_infinite"))
    sections += [
        "",
        v.claims_table(c.infinite_claims(runs)),
        "",
        "Figures: " + ", ".join(made),
    ]
    return write(out, "Ibrahim et al. 2024 (infinite schedule), small-scale twin", sections)


def guo2024(out: Path) -> str:
    runs, table, curves = results(out / "grid", GUO_KEYS)  # grid/<shift>/{main,quality}/
    sections = [v.grid_table(table, ["shift", "mitigation"], tasks=True)]
    made = []
    for shift in shifts(runs):
        part, part_curves = by_shift(runs, curves, shift)
        gap = plots.plot_stability_gap(part, part_curves, max_step=300)
        made.append(shift_figure(gap, "stability_gap", shift, out, "guo2024"))
        tasks = sorted(set(part_curves.loc[part_curves["metric"] == "task_acc_norm", "domain"]))
        if tasks:
            accuracy = plots.plot_curves(
                part,
                part_curves,
                "task_acc_norm",
                "step",
                plots.swept(part),
                tasks,
                "{domain}",
                "optimizer step",
                "accuracy (acc_norm)",
                300,
            )
            made.append(shift_figure(accuracy, "stability_gap_tasks", shift, out, "guo2024"))
    sections += ["", v.claims_table(c.guo_claims(runs)), "", "Figures: " + ", ".join(made)]
    return write(out, "Guo et al. 2024, small-scale twin", sections)


# ---- the docs ------------------------------------------------------------------------------------
def revision_step(init: object) -> int:
    match = re.search(r"step(\d+)", str(init))
    return int(match.group(1)) if match else -1


def summary(results: dict[str, str]) -> str:
    """One table of every paper's verdicts (without their numbers), from each paper's
    `results.md` text: the claims tables' rows."""
    lines = ["| paper | claim | where | verdict |", "|---|---|---|---|"]
    for paper, text in results.items():
        for row in text.splitlines():
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            if len(cells) == 4 and cells[2].startswith("**") and cells[0] != "claim":
                lines.append(f"| {paper} | {cells[0]} | {cells[1]} | {cells[2]} |")
    return "# Summary\n\n" + "\n".join(lines) + "\n"


def embed_figures(text: str, paper: str, folder: Path) -> str:
    """The results' `Figures: a.png, b.png` line as images of their copies in `folder` (named
    `<paper>_a.png`), for the docs; names without a copy stay as text."""

    def images(match: re.Match) -> str:
        names = match.group(1).split(", ")
        shown = [
            f"![{paper} {n}]({folder.name}/{paper}_{n})"
            for n in names
            if (folder / f"{paper}_{n}").is_file()
        ]
        rest = [n for n in names if not (folder / f"{paper}_{n}").is_file()]
        return "\n\n".join(shown + ([f"Figures: {', '.join(rest)}"] if rest else []))

    return re.sub(r"^Figures: (.+)$", images, text, flags=re.M)


def _marks(name: str) -> tuple[str, str]:
    """The comments around a generated section of the docs."""
    return f"<!-- reproduce:{name} -->", f"<!-- /reproduce:{name} -->"


def doc_section(path: Path, name: str) -> str | None:
    """The generated section `name` of a Markdown file as it stands, None without one."""
    doc = path.read_text() if path.is_file() else ""
    start, end = _marks(name)
    if start not in doc or end not in doc:
        return None
    return doc.split(start, 1)[1].split(end, 1)[0]


def update_doc(path: Path, name: str, text: str) -> bool:
    """Replace the generated section `name` of a Markdown file (between `<!-- reproduce:NAME -->`
    and `<!-- /reproduce:NAME -->`) with `text`, its headings two levels down (under the doc's section); False when the file
    has no such section."""
    if doc_section(path, name) is None:  # no file, or no such section: left as it is
        return False
    doc = path.read_text()
    start, end = _marks(name)
    body = re.sub(r"^(#+) ", r"##\1 ", text.strip(), flags=re.M)
    before, rest = doc.split(start, 1)
    after = rest.split(end, 1)[1]
    path.write_text(f"{before}{start}\n{body}\n{end}{after}")
    return True
