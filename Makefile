# prune_hooks — the two commands of the README, each doing its own set-up.
#   make test   create .venv if missing, install the real stack, lint (ruff), run the tests
#   make demo   the demo on the embedded toy data (FRAMEWORK=detectron2 | mmdet | ultralytics)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FRAMEWORK ?= detectron2
PYTEST_ARGS ?=

.PHONY: install test demo clean

install:
	$(PYTHON) dev/install_stack.py --venv $(VENV)

test: install
	$(PY) -m ruff check prune_hooks tests tools dev
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: install
	$(PY) tools/demo.py --framework $(FRAMEWORK) --out runs/demo/$(FRAMEWORK)

clean:
	rm -rf runs build *.egg-info .pytest_cache
