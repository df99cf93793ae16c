# Two set-up commands: `make test` and `make book`. Each creates .venv (Python 3.11) and installs
# the pinned requirements when .venv is missing or requirements.txt / pyproject.toml changed.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-explore book lab lint format clean bench

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile

# Property tests with fresh random examples (`make test` draws the same ones every run);
# a failure found here becomes an explicit @example in its test.
test-explore: $(STAMP)
	HYPOTHESIS_EXPLORE=1 $(BIN)/pytest -q -n 2 --dist loadfile -m hypothesis

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

lab: $(STAMP)
	$(BIN)/python -m ipykernel install --sys-prefix --name minimask --display-name "minimask (.venv)"
	mkdir -p $(VENV)/share/jupyter/lab/settings
	printf '%s\n' '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}' > $(VENV)/share/jupyter/lab/settings/overrides.json
	$(BIN)/jupyter lab --notebook-dir=chapters $(if $(filter 0,$(shell id -u)),--allow-root,)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)
	$(BIN)/python bench/inference.py

clean:
	rm -rf _build .pytest_cache .hypothesis .ruff_cache .jupyter_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
