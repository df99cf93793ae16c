# Two set-up commands: `make test` and `make book`. Each creates .venv (Python 3.11) and installs
# the pinned requirements when .venv is missing or requirements.txt / pyproject.toml changed.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

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

# Sphinx re-runs a chapter only when its own .md changed; the chapters also read the library,
# the weights and the data, so when any of those is newer than the last good build, every
# chapter is run again (its saved outputs removed first).
BOOK_STAMP := _build/.book-built
book: $(STAMP)
	@if [ -d _build/.doctrees ] && { [ ! -f $(BOOK_STAMP) ] || \
		[ -n "$$(find src data _static _config.yml _toc.yml -type f -newer $(BOOK_STAMP) | head -1)" ]; }; then \
		echo "library, data or weights changed since the last build: every chapter runs again"; \
		rm -rf _build/.doctrees _build/jupyter_execute; fi
	mkdir -p _build && touch $(BOOK_STAMP).new
	$(BIN)/jupyter-book build . -W -n --keep-going
	mv $(BOOK_STAMP).new $(BOOK_STAMP)

# The built site as a reader sees it: every page in headless Chromium, offline (tools/sitecheck.py);
# screenshots in _build/screenshots/. Run after `make book`. Installs Debian's chromium if missing.
.PHONY: site-check
site-check: $(STAMP)
	command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	$(BIN)/python tools/sitecheck.py _build/html

# The chapters open as notebooks (jupytext) on the kernel they name, python3: the lab's own Python,
# this .venv. jupyterlab-myst renders their MyST (directives, {eval} numbers); chapters/jupytext.toml
# keeps a saved chapter byte-identical when unchanged.
lab: $(STAMP)
	mkdir -p $(VENV)/share/jupyter/lab/settings
	printf '%s\n' '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}, "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}' > $(VENV)/share/jupyter/lab/settings/overrides.json
	$(BIN)/jupyter lab --notebook-dir=chapters $(if $(filter 0,$(shell id -u)),--allow-root,)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/python tools/lint_chapters.py

format: $(STAMP)
	$(BIN)/ruff format src tests bench tools
	$(BIN)/ruff check --fix src tests bench tools

bench: $(STAMP)
	$(BIN)/python bench/inference.py

clean:
	rm -rf _build .pytest_cache .hypothesis .ruff_cache .jupyter_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
