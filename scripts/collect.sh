#!/usr/bin/env bash
# A multirun folder as runs.csv + curves.csv:  scripts/collect.sh outputs/multirun/<date>/<time>
set -euo pipefail
exec python -m cpt.analysis.collect "$@"
