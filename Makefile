# make demo | make test | make lint | make format  (each creates .venv and installs when needed)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: install demo sweep-demo reproduce sync test test-slow test-slurm lint format clean
PAPER ?= all

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# a CPU machine must not pull a multi-GB CUDA build: take the CPU torch when none is importable
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,eval]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m cpt.demo

sweep-demo: $(STAMP)
	$(PY) scripts/sweep_demo.py

reproduce: $(STAMP)  # make reproduce PAPER=gupta2023|ibrahim2024_replay|ibrahim2024_infinite|guo2024|all
	$(PY) scripts/reproduce.py $(PAPER)

sync: $(STAMP)  # make sync SWEEP=outputs/multirun/<date>/<time>: wandb sync every offline run
	$(PY) -m cpt.analysis.sync $(SWEEP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-slurm: $(STAMP)  # needs the local cluster: scripts/local_slurm.sh start (as root)
	$(PY) -m pytest -m slurm $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
