"""What a grid asks of SLURM, checked in the launching process before any job is submitted.

- A grid on a SLURM launcher runs with `resume=auto` (`cluster=slurm` sets it): its jobs are
  requeued at their time limit (`cpt.scale.requeue`) and must find their own checkpoint; a named
  checkpoint (`resume=<path>`) would restore the same run in every job of the grid.
- The resources a job asks (nodes, tasks and CPUs per node, GPUs) fit the partition's nodes, as
  `sinfo` reports them; a job that cannot fit would wait in the queue forever.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

from cpt.config import ConfigError


def check_grid(cfg: Any) -> None:
    """Raise ConfigError (one line) for a grid the launcher cannot run as asked."""
    launcher = cfg.hydra.launcher
    if "SlurmLauncher" not in str(launcher.get("_target_", "")):
        return
    resume = cfg.get("resume")
    if resume != "auto":
        raise ConfigError(
            "resume: null on a SLURM launcher; expected resume=auto (or cluster=slurm): "
            "its jobs are requeued at their time limit and each resumes its own folder"
            if resume is None
            else f"resume: {resume} names one checkpoint for every job of the grid; expected "
            "resume=auto (each job resumes its own folder)"
        )
    check_partition(launcher)


def partition_nodes(partition: str | None) -> list[dict[str, int]] | None:
    """The partition's nodes as `sinfo` reports them (CPUs, GPUs), or None without `sinfo`."""
    if shutil.which("sinfo") is None:
        return None
    args = ["sinfo", "-h", "-N", "-o", "%n %c %G"] + (["-p", partition] if partition else [])
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigError(
            f"hydra.launcher.partition: {partition or '(default)'}: sinfo says "
            f"{done.stderr.strip() or 'nothing'}"
        )
    nodes = {}
    for line in done.stdout.splitlines():
        name, cpus, gres = (line.split() + ["", "", ""])[:3]
        gpus = sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        nodes[name] = {"cpus": int(cpus), "gpus": gpus}
    return list(nodes.values())


def check_partition(launcher: Any) -> None:
    nodes = partition_nodes(launcher.get("partition"))
    if nodes is None:
        return
    where = f"partition {launcher.get('partition') or '(default)'}"
    if not nodes:
        raise ConfigError(f"hydra.launcher.partition: {where} has no nodes")
    wanted = int(launcher.get("nodes") or 1)
    if wanted > len(nodes):
        raise ConfigError(
            f"hydra.launcher.nodes: {wanted} requested but {where} has {len(nodes)}; "
            f"expected at most {len(nodes)}"
        )
    tasks = int(launcher.get("tasks_per_node") or 1)
    cpus = tasks * int(launcher.get("cpus_per_task") or 1)
    most_cpus = max(n["cpus"] for n in nodes)
    if cpus > most_cpus:
        raise ConfigError(
            f"hydra.launcher.tasks_per_node: {tasks} tasks x cpus_per_task "
            f"{launcher.get('cpus_per_task') or 1} = {cpus} CPUs per node requested but the "
            f"nodes of {where} have at most {most_cpus}"
        )
    gpus = int(launcher.get("gpus_per_node") or 0)
    most_gpus = max(n["gpus"] for n in nodes)
    if gpus > most_gpus:
        raise ConfigError(
            f"hydra.launcher.gpus_per_node: {gpus} requested but the nodes of {where} have "
            f"at most {most_gpus}"
        )
