# The README's commands, one target each. Run them in the environment ResoMap is installed in
# (. .venv/bin/activate), or point the variables at it: make test PYTHON=.venv/bin/python
PYTHON ?= python
RESOMAP ?= resomap
# Extra Hydra overrides for demo and report, e.g. make demo ARGS="hydra/launcher=joblib"
ARGS ?=

.PHONY: help install demo report test test-fast lint

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## editable install with the test tools (pytest, ruff, the launchers)
	$(PYTHON) -m pip install -e '.[dev]'

demo: ## the demo sweep: 2 models x 5 resolutions on the embedded data, then the report
	$(RESOMAP) train -m experiment=demo $(ARGS)

report: ## rebuild the report of ./results
	$(RESOMAP) report $(ARGS)

test: ## the whole test suite (slow end-to-end tests included)
	$(PYTHON) -m pytest -q

test-fast: ## the tests that train nothing for seconds
	$(PYTHON) -m pytest -q -m "not slow"

lint: ## ruff, as pre-commit and CI run it
	$(PYTHON) -m ruff check .
