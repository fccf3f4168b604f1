#!/usr/bin/env bash
# Tokenize the domains of a data config into shards (see `python -m cpt.data.prepare --help`).
#   scripts/prepare_data.sh data=builtin
#   scripts/prepare_data.sh data=jsonl data.tokenizer=EleutherAI/pythia-410m \
#       data.domains.downstream.source='/corpus/*.jsonl.zst' data.prepare_workers=16
set -euo pipefail
exec python -m cpt.data.prepare "$@"
