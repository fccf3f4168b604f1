#!/usr/bin/env python3
"""`sacct` for the local test cluster (`scripts/local_slurm.sh`), which runs without accounting.

Answers the one form submitit asks, `sacct -o JobID,State,NodeList --parsable2 -j ID [-j ID ...]`,
from the controller (`scontrol show job -o`, which keeps a finished job for MinJobAge) and, for an
older job, from the job completion log (jobcomp/filetxt). An array task is `<array job>_<task>`, as
sacct prints it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

FIELDS = {"JobID", "State", "NodeList", "JobName"}


def records(job: str) -> list[dict[str, str]]:
    shown = subprocess.run(
        ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=False
    )
    found = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in shown.stdout.splitlines()]
    if found:
        return found
    log = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).parent / "log/jobcomp.txt"
    lines = log.read_text().splitlines() if log.is_file() else []
    done = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in lines]
    return [r for r in done if r.get("JobId") == job or r.get("ArrayJobId") == job][-1:]


def row(record: dict[str, str], fields: list[str]) -> str:
    array, task = record.get("ArrayJobId"), record.get("ArrayTaskId")
    job_id = f"{array}_{task}" if array and task and task != "N/A" else record.get("JobId", "")
    values = {
        "JobID": job_id,
        "State": record.get("JobState", "UNKNOWN"),
        "NodeList": record.get("NodeList", ""),
        "JobName": record.get("JobName", record.get("Name", "")),
    }
    return "|".join(values.get(f, "") for f in fields)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--format", default="JobID,State,NodeList")
    parser.add_argument("-j", "--jobs", action="append", default=[])
    parser.add_argument("--parsable2", "-P", action="store_true")
    parser.add_argument("-n", "--noheader", action="store_true")
    args, _ = parser.parse_known_args()
    fields = args.format.split(",")
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        print(f"sacct (local stand-in): fields {unknown} not known", file=sys.stderr)
        return 1
    out = [] if args.noheader else ["|".join(fields)]
    for jobs in args.jobs:
        for job in jobs.split(","):
            out += [row(r, fields) for r in records(job)]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
