"""Every experiment recipe runs, and the paper-scale recipes carry the papers' values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from cpt.run.build import build
from cpt.train import run
from tests.conftest import CONF, SMALL_DATA

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PRETRAINING = ("demo_pretrain", "twin_upstream")  # upstream models: no tasks in the loop
# what every recipe is shrunk to: the built-in corpora, `tiny` from scratch, three CPU steps
FAST = [
    "model=tiny",
    "init=scratch",
    "data=builtin",
    "trainer=default",
    "trainer.devices=1",
    "debug=fast",
    "logger=csv",
    *SMALL_DATA,
]


def compose_experiment(name: str, *overrides: str, hydra: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train", overrides=[f"experiment={name}", *overrides], return_hydra_config=hydra
        )


def test_the_folder_holds_every_paper_and_its_twin():
    for paper in (
        "gupta2023_rewarm",
        "ibrahim2024_replay",
        "ibrahim2024_infinite",
        "guo2024_stability_gap",
    ):
        assert paper in EXPERIMENTS and f"{paper}_cpu" in EXPERIMENTS


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if n.endswith("_cpu")])
def test_every_twin_is_its_paper_recipe_at_cpu_scale(name):
    """A twin restates nothing: it names its paper recipe and the `scale` that shrinks it."""
    import yaml

    defaults = yaml.safe_load((CONF / "experiment" / f"{name}.yaml").read_text())["defaults"]
    assert defaults[:2] == [name.removesuffix("_cpu"), {"/scale": "cpu"}]
    twin = compose_experiment(name, "init=ckpt:x")
    assert (twin.model.name, twin.trainer.devices, twin.data.global_batch_size) == ("tiny", 1, None)


def test_a_grid_holds_only_the_points_its_recipe_names():
    infinite = compose_experiment("ibrahim2024_infinite", hydra=True).hydra.sweeper.params
    points = [len(str(values).split(",")) for values in infinite.values()]
    assert points == [1, 2]  # the replay share inherited from ibrahim2024_replay is fixed


@pytest.mark.parametrize(
    "name",
    [n if n.endswith("_cpu") or n in PRETRAINING or n.startswith("demo") else
     pytest.param(n, marks=pytest.mark.slow) for n in EXPERIMENTS],
)  # the paper-scale recipes in the slow run: each twin runs its recipe shrunk here  # fmt: skip
def test_every_experiment_runs_a_few_steps(name, data_dir, tmp_path, upstream_checkpoint):
    cfg = compose_experiment(name, *FAST, f"data.dir={data_dir}", f"output_dir={tmp_path / 'run'}")
    if cfg.callbacks.rewarm.optimizer_state == "load":  # the next task: from a cpt checkpoint
        cfg.init = cfg.callbacks.rewarm.init = f"ckpt:{upstream_checkpoint}"
    for domain in set(cfg.data.domains) - {"upstream", "downstream"}:  # SMALL_DATA's caps
        cfg.data.domains[domain].max_docs, cfg.data.domains[domain].val_tokens = 40, 2048
    if cfg.data.mixture:  # a recipe training on a mixture keeps it (the built-in domains match)
        assert set(cfg.data.mixture) <= set(cfg.data.domains)
    in_loop = "_target_" in cfg.callbacks.get("task_eval", {})
    assert in_loop == (name not in PRETRAINING)  # every CPT recipe evaluates tasks in the loop
    if in_loop:  # the hub's benchmarks need a download: the built-in ones
        if not name.endswith("_cpu"):
            cfg.callbacks.task_eval.tasks = ["next_line_downstream"]
        cfg.callbacks.task_eval.limit = 20
    summary = run(cfg)
    if in_loop:
        assert {"next_line_downstream/acc", "next_line_downstream/acc_norm"} <= set(
            summary["final_tasks"]
        )
    assert summary["steps"] == 3
    assert set(summary["final_val_loss"]) == set(cfg.data.domains) >= {"upstream", "downstream"}
    assert json.loads((Path(cfg.output_dir) / "summary.json").read_text())["steps"] == 3


@pytest.mark.parametrize(
    "name", [n for n in EXPERIMENTS if n.startswith(("gupta", "ibrahim", "guo"))]
)
def test_every_grid_point_of_every_recipe_validates(name, tmp_path, upstream_checkpoint):
    """Each job of the recipe's `-m` grid composes and passes the checks (no data, no download)."""
    cfg = compose_experiment(name, hydra=True)
    params = cfg.hydra.sweeper.params or {}
    points = [[]]
    for key, values in params.items():
        if key == "seed":  # the twins' seeds change no check
            continue
        points = [p + [f"{key}={v}"] for p in points for v in str(values).split(",")]
    for point in points:
        job = compose_experiment(name, *point, "init=scratch", f"output_dir={tmp_path}")
        if job.callbacks.rewarm.optimizer_state == "load":  # the next task: a cpt checkpoint,
            if job.model.name == "tiny":  # one of its own model here (a twin)
                job.init = job.callbacks.rewarm.init = f"ckpt:{upstream_checkpoint}"
            else:  # none of the paper's model: its moments are loaded in the step runs above
                job.callbacks.rewarm.optimizer_state = "fresh"
        # the corpora themselves are named by the user or streamed: checked elsewhere
        job.data.domains.upstream.source = "python-docs"
        job.data.domains.downstream.source = "python-code"
        # the node (GPUs, FSDP) is checked elsewhere; the recipe's device count stays, so that its
        # global batch is checked against it
        if job.trainer.get("accelerator") == "gpu":
            job.trainer.accelerator = "cpu"
        if "strategy" in job.trainer:
            job.trainer.strategy = "ddp"
        build(job)  # the same checks and objects a run starts with (geometry, schedule, callbacks)


def test_gupta2023_carries_the_papers_values():
    cfg = compose_experiment("gupta2023_rewarm", hydra=True)
    assert cfg.model.name == "pythia-410m"
    assert cfg.init == "hf:EleutherAI/pythia-410m@step143000"
    assert (cfg.schedule.name, cfg.schedule.min_lr_ratio) == ("cosine", 0.1)  # min = max / 10
    assert cfg.callbacks.rewarm.optimizer_state == "fresh"
    grid = cfg.hydra.sweeper.params
    assert [float(v) for v in grid["schedule.warmup"].split(",")] == [0.0, 0.005, 0.01, 0.02]
    assert [float(v) for v in grid["optim.max_lr"].split(",")] == [1.5e-4, 3e-4, 6e-4]
    assert (
        cfg.data.domains.upstream.source.startswith("hf:")
        and "pile" in cfg.data.domains.upstream.source
    )
    assert cfg.data.domains.downstream.source == "hf:cerebras/SlimPajama-627B"
    constant = compose_experiment("gupta2023_constant", hydra=True)
    assert (constant.schedule.name, constant.optim.max_lr, constant.schedule.warmup) == (
        "constant",
        3e-5,
        0,
    )
    assert constant.hydra.sweeper.params is None


def test_ibrahim2024_carries_the_papers_values():
    cfg = compose_experiment("ibrahim2024_replay", hydra=True)
    assert (cfg.optim.max_lr, cfg.schedule.min_lr_ratio, cfg.schedule.warmup) == (3e-4, 0.1, 0.01)
    assert list(cfg.optim.betas) == [0.9, 0.95]
    assert cfg.data.global_batch_size == 1104 and cfg.data.seq_len == 2048
    assert cfg.callbacks.replay.source == "upstream"
    fractions = [float(v) for v in cfg.hydra.sweeper.params["callbacks.replay.fraction"].split(",")]
    assert fractions == [0.0, 0.005, 0.01, 0.05, 0.1, 0.5]
    union = compose_experiment("ibrahim2024_union")
    assert union.init == "scratch" and dict(union.data.mixture) == {
        "upstream": 0.5,
        "downstream": 0.5,
    }
    assert union.trainer.max_tokens == 2 * cfg.trainer.max_tokens == 6e11  # the combined budget
    assert cfg.trainer.max_steps is None  # the papers state budgets in tokens
    infinite = compose_experiment("ibrahim2024_infinite", hydra=True)
    s = infinite.schedule
    assert (s.name, s.warmup, s.cooldown, s.anneal, s.timescale) == (
        "infinite",
        0.01,
        0.59,
        0.0,
        10.0,
    )
    assert s.constant_lr_ratio * infinite.optim.max_lr == pytest.approx(1.65e-4)
    assert infinite.hydra.sweeper.params["schedule.anneal"] == "0.0,0.15"
    following = compose_experiment("ibrahim2024_infinite_next", "init=ckpt:x")
    assert following.optim.max_lr == pytest.approx(1.65e-4)  # constant carried: no re-warming
    assert (following.schedule.warmup, following.schedule.cooldown) == (0, 0)
    assert following.schedule.min_lr_ratio * following.optim.max_lr == pytest.approx(3e-5, rel=1e-3)
    assert following.callbacks.rewarm.optimizer_state == "load"
    german = compose_experiment("ibrahim2024_replay", "data=pile_german")
    assert german.data.domains.downstream.hf_config == "de"


def test_guo2024_carries_the_papers_setting_and_mitigations():
    cfg = compose_experiment("guo2024_stability_gap", hydra=True)
    assert cfg.model.name == "open-llama-3b" and cfg.init == "hf:openlm-research/open_llama_3b"
    assert cfg.hydra.sweeper.params["mitigation"] == "none,subcorpus,quality,mixture"
    assert cfg.callbacks.stability_gap.dense[0] == [200, 2]  # dense monitoring at the start
    sub = compose_experiment("guo2024_stability_gap", "mitigation=subcorpus")
    steps = round(sub.trainer.max_tokens / (sub.data.global_batch_size * sub.data.seq_len))
    run_tokens = steps * sub.data.global_batch_size * sub.data.seq_len
    assert sub.data.domains.downstream.max_tokens == run_tokens // 4  # four epochs of a quarter
    quality = compose_experiment("guo2024_stability_gap", "mitigation=quality")
    assert quality.data.domains.downstream.quality.keep == 0.5
    mixture = compose_experiment("guo2024_stability_gap", "mitigation=mixture")
    assert dict(mixture.data.mixture) == {"downstream": 0.5, "upstream": 0.5}


def test_twins_run_three_seeds_and_the_gupta_and_ibrahim_grids_both_shifts():
    for name in (n for n in EXPERIMENTS if n.endswith("_cpu")):
        params = compose_experiment(name, "init=ckpt:x", hydra=True).hydra.sweeper.params
        assert len(str(params.seed).split(",")) >= 3, name
        both = name.startswith(
            ("gupta2023_rewarm", "gupta2023_constant", "ibrahim2024_replay", "guo2024")
        )
        assert (params.get("shift") == "strong,weak") == both, name
    for shift, downstream in (("strong", "python-code"), ("weak", "python-docs")):
        twin = compose_experiment("gupta2023_rewarm_cpu", f"shift={shift}")
        assert (twin.data.domains.upstream.source, twin.data.domains.downstream.source) == (
            "package-docs",
            downstream,
        )
        # continued with the upstream model's own tokenizer, from its run folder
        assert twin.data.tokenizer == "outputs/twin-upstream/tokenizer.json"
        assert twin.init == "ckpt:outputs/twin-upstream/checkpoints/last.ckpt"
    upstream = compose_experiment("twin_upstream")
    sources = {d.source for d in upstream.data.domains.values()}
    assert sources == {"package-docs", "python-code", "python-docs"}  # its tokenizer sees all three
    assert (
        upstream.data.train == "upstream"
        and upstream.data.domains.upstream.source == "package-docs"
    )


@pytest.mark.parametrize("shift", ["strong", "weak"])
def test_the_union_twin_trains_on_what_the_sequential_run_saw(shift):
    """Per shift, the union baseline's mixture is the upstream model's windows plus the continued
    run's (with the replay its claim compares), over the sum of both runs' steps."""
    from cpt.reproduce.design import UNION_REPLAY, union_windows

    sequential = compose_experiment("ibrahim2024_replay_cpu", f"shift={shift}", "init=ckpt:x")
    upstream = compose_experiment("twin_upstream")
    windows = union_windows(shift)
    cpt_windows = sequential.trainer.max_steps * sequential.data.micro_batch_size
    replayed = cpt_windows * UNION_REPLAY[shift]
    assert windows == {
        "upstream": upstream.trainer.max_steps * upstream.data.micro_batch_size + replayed,
        "downstream": cpt_windows - replayed,
    }
    union = compose_experiment(
        "ibrahim2024_union_cpu",
        f"shift={shift}",
        *(f"data.mixture.{d}={w}" for d, w in windows.items()),
    )
    assert union.trainer.max_steps == upstream.trainer.max_steps + sequential.trainer.max_steps
    assert sum(windows.values()) == union.trainer.max_steps * union.data.micro_batch_size
    assert union.init == "scratch"
    if shift == "strong":  # the recipe's own weights are the strong shift's
        assert dict(compose_experiment("ibrahim2024_union_cpu").data.mixture) == windows


def test_the_guo_twin_measures_the_gap_on_tasks_densely():
    guo = compose_experiment("guo2024_stability_gap_cpu", "init=ckpt:x").callbacks.task_eval
    others = compose_experiment("gupta2023_rewarm_cpu", "init=ckpt:x").callbacks.task_eval
    assert guo.dense and guo.dense[0][1] <= 5 and not others.dense  # the others: start and end


def test_every_twin_monitors_the_gap_alike():
    """One stability-gap monitor setting in every twin (conf/scale/cpu.yaml's)."""
    keys = ("dense", "every", "batches")
    monitors = {}
    for name in (n for n in EXPERIMENTS if n.endswith("_cpu")):
        monitor = compose_experiment(name, "init=ckpt:x").callbacks.get("stability_gap")
        if monitor is not None:
            monitors[name] = json.dumps({k: OmegaConf.to_container(monitor)[k] for k in keys})
    assert len(monitors) >= 6
    settings = set(monitors.values())
    assert len(settings) == 1, monitors


def test_the_guo_twin_runs_the_papers_lr_ratio_and_its_probe():
    from cpt.reproduce.design import guo_probe

    paper = compose_experiment("guo2024_stability_gap")
    twin = compose_experiment("guo2024_stability_gap_cpu", "init=ckpt:x")
    upstream = compose_experiment("twin_upstream")
    assert twin.optim.max_lr / upstream.optim.max_lr == pytest.approx(0.1)
    assert paper.optim.max_lr / 3e-4 == pytest.approx(0.1)  # OpenLLaMA-3B's pre-training peak
    probed = compose_experiment("guo2024_stability_gap_cpu", "init=ckpt:x", *guo_probe("strong"))
    assert probed.data.domains.probe.source == "python-docs"
    assert "next_line_probe" in probed.callbacks.task_eval.tasks
    assert guo_probe("weak") == []


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_a_schedule_chosen_on_the_command_line_wins_over_the_recipes(name):
    """`schedule=<option>` after a recipe takes effect: a recipe picks its schedule in its defaults
    and never pins `schedule.name` in its body (where it would silently override the choice; the
    infinite chain's cosine runs once ran the infinite schedule that way)."""
    for schedule in ("constant", "wsd"):  # at least one differs from any recipe's own
        assert compose_experiment(name, f"schedule={schedule}").schedule.name == schedule


def test_the_infinite_chain_runs_the_schedules_it_names():
    from cpt.reproduce.reports import INFINITE

    expected = {"infinite": "infinite", "cosine": "cosine"}
    for variant, (task, _, overrides) in INFINITE.items():
        experiment = "ibrahim2024_infinite_cpu" if task == 1 else "ibrahim2024_infinite_next_cpu"
        extra = ["init=random"] if task == 2 else []
        cfg = compose_experiment(experiment, *overrides, *extra)
        assert cfg.schedule.name == expected[variant.split("_")[1]], variant


def test_the_twins_upstream_keeps_every_revision_the_revisions_grid_starts_from():
    """keep_last (2 by default) once deleted the upstream's 750- and 1500-step checkpoints, and the
    Gupta twin's revisions grid was skipped: every step it starts from must survive retention."""
    import re

    from hydra.utils import instantiate

    from cpt.reproduce.twins import REVISIONS

    upstream = compose_experiment("twin_upstream")
    keeper = instantiate(upstream.callbacks.checkpoint, dirpath="unused")
    every, last = upstream.callbacks.checkpoint.every_n_train_steps, upstream.trainer.max_steps
    saved = list(range(every, last + 1, every))
    grid = compose_experiment("gupta2023_revisions_cpu", hydra=True)
    starts = {int(s) for s in re.findall(r"step(\d+)\.ckpt", grid.hydra.sweeper.params.init)}
    assert starts == set(REVISIONS) and starts <= keeper.kept(saved)
